"""Pods run hardened, and credentials reach them only through Secrets."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    PROFILES,
    Helm,
    name_of,
    of_kind,
    pod_specs,
)

SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|_KEY$|_KEY_ID$)")
USERINFO_BY_REFERENCE = re.compile(r"://[^:/@]+:\$\(LABELLOOP_DATABASE_PASSWORD\)@")
SENTINELS: dict[str, str] = {
    "secrets.kafkaPassword": "sentinel-kafka-password-3b6e",
    "secrets.adminToken": "sentinel-admin-token-8f3a",
    "secrets.s3AccessKey": "sentinel-access-key-51c2",
    "secrets.s3SecretKey": "sentinel-secret-key-a9d0",
    "secrets.databasePassword": "sentinel-db-password-77e4",
}
NO_EXISTING_SECRETS: dict[str, str] = {
    "kafka.sasl.existingSecret": "",
    "s3.existingSecret": "",
    "database.existingSecret": "",
    "auth.existingSecret": "",
}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_pod_is_hardened(rendered: dict[str, list[dict[str, Any]]], profile: str) -> None:
    pods = pod_specs(rendered[profile])
    assert len(pods) == 9  # six services, Triton, the migration and topics Jobs
    for name, pod in pods.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            hardening = container["securityContext"]
            assert hardening["readOnlyRootFilesystem"] is True, name
            assert hardening["allowPrivilegeEscalation"] is False, name
            assert hardening["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in hardening["capabilities"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # The root filesystem is read-only: /tmp is the writable scratch space.
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            if name != name_of("migrate") and name != name_of("triton"):
                assert "emptyDir" in volumes[mounts["/var/lib/labelloop"]], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("profile", list(PROFILES))
def test_services_probe_healthz_and_readyz(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    deployments = of_kind(rendered[profile], "Deployment")
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        liveness, readiness = container["livenessProbe"], container["readinessProbe"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if name == name_of("triton"):
            assert liveness["httpGet"]["path"] == "/v2/health/live"
            assert readiness["httpGet"]["path"] == "/v2/health/ready"
            assert ports[liveness["httpGet"]["port"]] == 8000
            continue
        assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}
        assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert ports == {"http": 8080}


def _env_by_name(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _assert_credentials_by_reference(
    manifests: list[dict[str, Any]], secret_names: set[str]
) -> int:
    checked = 0
    for name, pod in pod_specs(manifests).items():
        for container in pod["containers"]:
            for env_name, entry in _env_by_name(container).items():
                if not SECRET_ENV.search(env_name):
                    value = entry.get("value", "")
                    if "@" in value:  # a URL with credentials takes its password by reference
                        assert USERINFO_BY_REFERENCE.search(value), (name, env_name)
                    continue
                assert "value" not in entry, (name, env_name)
                reference = entry["valueFrom"]["secretKeyRef"]
                assert reference["name"] in secret_names, (name, env_name)
                checked += 1
            for source in container.get("envFrom", []):
                assert "secretRef" not in source or source["secretRef"]["name"] in secret_names
    return checked


def test_existing_secrets_are_referenced_never_copied(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    manifests = rendered["default"]
    assert not of_kind(manifests, "Secret"), "with existingSecret names the chart makes none"
    checked = _assert_credentials_by_reference(
        manifests, {"labelloop-s3", "labelloop-postgresql", "labelloop-auth", "labelloop"}
    )
    # 6 services and the topics Job x 5 credentials (S3 x 2, admin token, database and Kafka
    # passwords), Triton's 2, the migration's database password
    assert checked == 7 * 5 + 2 + 1
    api = of_kind(manifests, "Deployment")[name_of("api")]["spec"]["template"]["spec"]
    env = _env_by_name(api["containers"][0])
    assert env["LABELLOOP_DATABASE_URL"]["value"] == (
        "postgresql+psycopg://labelloop:$(LABELLOOP_DATABASE_PASSWORD)"
        "@labelloop-postgresql:5432/labelloop"
    )
    names = list(env)
    assert names.index("LABELLOOP_DATABASE_PASSWORD") < names.index("LABELLOOP_DATABASE_URL"), (
        "Kubernetes expands $(VAR) only from variables defined before"
    )


def test_whole_database_url_from_a_secret(helm: Helm) -> None:
    manifests = helm.render("default", {"database.urlKey": "uri", "database.host": ""})
    for pod in pod_specs(manifests).values():
        for container in pod["containers"]:
            env = _env_by_name(container)
            if "LABELLOOP_DATABASE_URL" in env:
                assert env["LABELLOOP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                    "name": "labelloop-postgresql",
                    "key": "uri",
                }
                assert "LABELLOOP_DATABASE_PASSWORD" not in env


def test_chart_made_secret_keeps_values_out_of_everything_else(helm: Helm) -> None:
    values = {"secrets.create": True, **NO_EXISTING_SECRETS, **SENTINELS}
    result = helm.run(*helm.template_args("default", values, ()))
    assert result.returncode == 0, result.stderr
    for sentinel in SENTINELS.values():
        assert sentinel not in result.stdout, "a secret value was rendered in plain text"
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (secret,) = of_kind(manifests, "Secret").values()
    assert secret["metadata"]["name"] == name_of("secrets")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(decoded.values()) == set(SENTINELS.values())
    assert _assert_credentials_by_reference(manifests, {name_of("secrets")}) == 7 * 5 + 2 + 1
    (config,) = of_kind(manifests, "ConfigMap").values()
    assert not set(config["data"].values()) & set(SENTINELS.values())


def test_secrets_are_required_one_way_or_the_other(helm: Helm) -> None:
    error = helm.render_error("default", NO_EXISTING_SECRETS)
    assert "existingSecret" in error
    error = helm.render_error("default", {"secrets.create": True, **NO_EXISTING_SECRETS})
    assert "secrets.s3AccessKey is required" in error


def test_values_carry_no_default_secret() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["secrets"]["create"] is False
    assert {k: v for k, v in values["secrets"].items() if k != "create"} == {
        "adminToken": "",
        "s3AccessKey": "",
        "s3SecretKey": "",
        "databasePassword": "",
        "kafkaPassword": "",
    }
    for profile in PROFILES.values():
        assert "secrets" not in yaml.safe_load(profile.read_text())
    text = (CHART / "values.yaml").read_text()
    assert "minioadmin" not in text and "labelloop-local-admin" not in text


def test_config_map_carries_the_settings(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (config,) = of_kind(rendered["default"], "ConfigMap").values()
    data = config["data"]
    assert data["LABELLOOP_ENVIRONMENT"] == "cluster"  # refuses the local default secrets
    assert data["LABELLOOP_KAFKA_BOOTSTRAP_SERVERS"] == "labelloop-kafka-kafka-bootstrap:9092"
    assert data["LABELLOOP_API_HOST"] == "0.0.0.0"
    assert data["LABELLOOP_VAR_DIR"] == "/var/lib/labelloop"
    assert data["LABELLOOP_TRITON_HOST"] == name_of("triton")
    triton = of_kind(rendered["default"], "Service")[name_of("triton")]
    ports = {p["name"]: p["port"] for p in triton["spec"]["ports"]}
    assert int(data["LABELLOOP_TRITON_GRPC_PORT"]) == ports["triton-grpc"]
    assert int(data["LABELLOOP_TRITON_HTTP_PORT"]) == ports["triton-http"]
    assert all(not SECRET_ENV.search(name) for name in data)
