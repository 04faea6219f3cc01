"""The chart lints, renders every profile, and every manifest is valid Kubernetes."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import (
    CHART,
    KUBE_VERSION,
    PROFILES,
    SERVICES,
    Helm,
    name_of,
    of_kind,
)

CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
"""Kinds that are not Kubernetes' own: checked against their documented fields elsewhere."""

EVERYTHING_ON = {
    "networkPolicy.enabled": True,
    "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name": "monitoring",
    "networkPolicy.apiFrom[0].namespaceSelector.matchLabels.name": "ingress",
    "metrics.serviceMonitor.enabled": True,
    "ingress.enabled": True,
    "ingress.host": "labelloop.example.com",
    "ingress.tlsSecretName": "labelloop-tls",
    "serviceAccount.annotations.team": "ml",
}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_helm_lint_passes_strict(helm: Helm, profile: str) -> None:
    result = helm.run("lint", str(CHART), "--strict", "-f", str(PROFILES[profile]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("profile", list(PROFILES))
def test_profile_renders_every_component(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    manifests = rendered[profile]
    deployments = of_kind(manifests, "Deployment")
    assert set(deployments) == {name_of(s) for s in [*SERVICES, "triton"]}
    assert set(of_kind(manifests, "Service")) == set(deployments)
    assert set(of_kind(manifests, "PodDisruptionBudget")) == set(deployments)
    assert set(of_kind(manifests, "Job")) == {name_of("migrate"), name_of("topics")}
    assert set(of_kind(manifests, "ConfigMap")) == {name_of("config")}


def _validate_all(manifests: list[dict[str, Any]]) -> set[str]:
    validated = set()
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_RESOURCES:
            continue
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        validated.add(manifest["kind"])
    return validated


@pytest.mark.parametrize("profile", list(PROFILES))
def test_manifests_are_valid_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    validated = _validate_all(rendered[profile])
    assert {"Deployment", "Service", "ConfigMap", "Job", "PodDisruptionBudget"} <= validated
    assert "ServiceAccount" in validated


@pytest.mark.parametrize("version", ["1.27.0", "1.37.0"])
def test_manifests_are_valid_on_the_oldest_and_newest_kubernetes(helm: Helm, version: str) -> None:
    """Chart.yaml promises Kubernetes >= 1.27; the newest schemas kubernetes-validate ships."""
    manifests = helm.render("gpu", EVERYTHING_ON)
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_optional_resources_are_valid_kubernetes(helm: Helm) -> None:
    manifests = helm.render("default", {**EVERYTHING_ON, "keda.enabled": False})
    validated = _validate_all(manifests)
    assert {"NetworkPolicy", "Ingress", "HorizontalPodAutoscaler"} <= validated
    secrets = helm.render(
        "default",
        {
            "secrets.create": True,
            "s3.existingSecret": "",
            "secrets.s3AccessKey": "access",
            "secrets.s3SecretKey": "secret",
        },
    )
    assert "Secret" in _validate_all(secrets)


def test_strict_validation_catches_a_wrong_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The validation above can fail: an unknown field in a container is refused."""
    deployment = copy.deepcopy(of_kind(rendered["default"], "Deployment")[name_of("api")])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_servicemonitor_has_the_documented_fields(helm: Helm) -> None:
    """Prometheus Operator's ServiceMonitor: selector, namespaceSelector, endpoints[].port."""
    manifests = helm.render("default", {"metrics.serviceMonitor.enabled": True})
    (monitor,) = of_kind(manifests, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["labelloop"]}
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert set(endpoints) == {"http", "metrics"}
    for endpoint in endpoints.values():
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["path"] == "/metrics"
        assert endpoint["interval"].endswith("s") and endpoint["scrapeTimeout"].endswith("s")
    # It selects every Service, and each one has a port an endpoint scrapes.
    services = of_kind(manifests, "Service")
    for service in services.values():
        assert labels.items() <= service["metadata"]["labels"].items()
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert ports & set(endpoints), service["metadata"]["name"]
    assert {p["name"] for p in services[name_of("api")]["spec"]["ports"]} == {"http"}
    assert "http" not in {p["name"] for p in services[name_of("triton")]["spec"]["ports"]}


def test_network_policies_admit_what_the_services_need(helm: Helm) -> None:
    manifests = helm.render("default", EVERYTHING_ON)
    policies = of_kind(manifests, "NetworkPolicy")
    api = policies[name_of("api")]["spec"]["ingress"][0]
    assert api["from"] == [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]
    triton = policies[name_of("triton")]["spec"]
    inference = triton["ingress"][0]
    labeler = inference["from"][0]["podSelector"]["matchLabels"]
    assert labeler["app.kubernetes.io/component"] == "labeler-assist"
    assert {p["port"] for p in inference["ports"]} == {"triton-http", "triton-grpc"}
    deployments = of_kind(manifests, "Deployment")
    labeler_pod = deployments[name_of("labeler-assist")]["spec"]["template"]
    assert labeler.items() <= labeler_pod["metadata"]["labels"].items()
    triton_pod = deployments[name_of("triton")]["spec"]["template"]
    container_ports = {p["name"] for p in triton_pod["spec"]["containers"][0]["ports"]}
    for rule in triton["ingress"]:
        assert {p["port"] for p in rule["ports"]} <= container_ports


def test_the_ingress_routes_the_api_and_never_metrics_or_probes(helm: Helm) -> None:
    (ingress,) = of_kind(helm.render("default", EVERYTHING_ON), "Ingress").values()
    paths = {
        (path["path"], path["pathType"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert paths == {
        ("/api", "Prefix"),
        ("/docs", "Prefix"),
        ("/openapi.json", "Exact"),
        ("/integrations/label-studio", "Prefix"),
        ("/ui", "Prefix"),
    }
    for exposed in ("/", "/metrics", "/readyz"):
        error = helm.render_error("default", {**EVERYTHING_ON, "ingress.paths[0].path": exposed})
        assert "paths" in error, exposed
