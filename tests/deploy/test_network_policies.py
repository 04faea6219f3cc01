"""NetworkPolicies are on by default: Triton answers labeler-assist only and reaches only DNS
and S3, every pod of the release refuses what no rule admits, and the dependencies' own pods,
where the chart is told their labels, admit only the labelloop pods that use them.

The checks evaluate the rendered policies as Kubernetes does (selectors, peers, ports) for the
release's own pods and for a stranger pod in the same namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, PROFILES, RELEASE, Helm, name_of, of_kind, pod_specs

Labels = dict[str, str]
STRANGER: Labels = {"app": "curious", "app.kubernetes.io/instance": "other"}
"""Any other pod of the namespace (say one a tenant runs)."""
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}


def selects(selector: dict[str, Any], labels: Labels) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) applied to ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_admits(peer: dict[str, Any], labels: Labels) -> bool:
    if "namespaceSelector" in peer or "ipBlock" in peer:
        return False  # other namespaces or addresses: never a pod of this namespace
    return selects(peer["podSelector"], labels)


def admitted(
    manifests: list[dict[str, Any]], target: Labels, source: Labels, port: str | int
) -> bool:
    """Whether a pod labelled ``source`` (same namespace) may open ``port`` on ``target``."""
    policies = [
        p["spec"]
        for p in of_kind(manifests, "NetworkPolicy").values()
        if "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], target)
    ]
    if not policies:
        return True  # no policy selects the pod: Kubernetes admits everything
    for policy in policies:
        for rule in policy.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and all(p.get("port") != port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None or any(_peer_admits(peer, source) for peer in peers):
                return True
    return False


def pod_labels(manifests: list[dict[str, Any]]) -> dict[str, Labels]:
    """Every pod template's labels (Deployments and Jobs), by component."""
    return {
        m["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"][
            "template"
        ]["metadata"]["labels"]
        for m in manifests
        if m["kind"] in {"Deployment", "Job"}
    }


def test_policies_are_on_by_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["networkPolicy"]["enabled"] is True
    for profile in PROFILES.values():
        assert "networkPolicy" not in yaml.safe_load(profile.read_text())


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_pod_of_the_release_is_under_an_ingress_policy(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    manifests = rendered[profile]
    policies = of_kind(manifests, "NetworkPolicy")
    assert name_of("default-deny") in policies and name_of("triton") in policies
    pods = pod_labels(manifests)
    assert len(pods) == 9  # six services, Triton, the migration and topics Jobs
    for component, labels in pods.items():
        assert any(
            "Ingress" in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)
            for p in policies.values()
        ), component
        assert not admitted(manifests, labels, STRANGER, "metrics"), component
    # The Jobs answer nobody at all.
    for job in ("migrate", "topics"):
        for source in [STRANGER, *pods.values()]:
            assert not admitted(manifests, pods[job], source, 8080), job


@pytest.mark.parametrize("profile", list(PROFILES))
def test_triton_answers_labeler_assist_only(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    """Triton loads whatever model.py it is sent and runs it with the S3 keys."""
    manifests = rendered[profile]
    pods = pod_labels(manifests)
    triton = pods["triton"]
    for port in ("triton-http", "triton-grpc", 8000, 8001, "metrics"):
        reachable = {
            component
            for component, labels in {**pods, "stranger": STRANGER}.items()
            if component != "triton" and admitted(manifests, triton, labels, port)
        }
        expected = {"labeler-assist"} if port in ("triton-http", "triton-grpc") else set()
        assert reachable == expected, port
    # The named ports are Triton's container ports (a policy naming a missing port admits none).
    (container,) = pod_specs(manifests)[name_of("triton")]["containers"]
    assert {"triton-http", "triton-grpc", "metrics"} <= {p["name"] for p in container["ports"]}


def render_with(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Render the default profile with nested ``values`` (given as a file: lists and label
    keys with dots do not survive ``--set``)."""
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    return helm.render("default", files=[file])


def test_triton_metrics_only_from_the_named_scrapers(helm: Helm, tmp_path: Path) -> None:
    manifests = render_with(helm, tmp_path, {"networkPolicy": {"metricsFrom": [PROMETHEUS]}})
    rules = of_kind(manifests, "NetworkPolicy")[name_of("triton")]["spec"]["ingress"]
    metrics = [rule for rule in rules if {p["port"] for p in rule["ports"]} == {"metrics"}]
    assert [rule["from"] for rule in metrics] == [[PROMETHEUS]]
    assert not admitted(manifests, pod_labels(manifests)["triton"], STRANGER, "metrics")


@pytest.mark.parametrize(
    ("values", "ports"),
    [
        pytest.param({}, {9000}, id="s3-endpoint-port"),
        pytest.param({"networkPolicy": {"s3Ports": [9000, 9443]}}, {9000, 9443}, id="given"),
        pytest.param({"s3": {"endpoint": "s3.amazonaws.com", "secure": True}}, {443}, id="https"),
    ],
)
def test_triton_reaches_only_dns_and_s3(
    helm: Helm, tmp_path: Path, values: dict[str, Any], ports: set[int]
) -> None:
    """Never Kafka (9092) nor the database (5432): a loaded model could forge events."""
    manifests = render_with(helm, tmp_path, values)
    policy = of_kind(manifests, "NetworkPolicy")[name_of("triton")]["spec"]
    assert "Egress" in policy["policyTypes"]
    allowed = set()
    for rule in policy["egress"]:
        assert "to" not in rule or rule["to"]
        allowed |= {(p["port"], p["protocol"]) for p in rule["ports"]}
    assert allowed == {(53, "UDP"), (53, "TCP")} | {(port, "TCP") for port in ports}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_services_answer_the_release_only_and_the_api_everyone(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    manifests = rendered[profile]
    pods = pod_labels(manifests)
    for service in ("ingest", "jobgen", "webhooks", "labeler-assist", "trainer"):
        assert not admitted(manifests, pods[service], STRANGER, "http"), service
        assert admitted(manifests, pods[service], pods["api"], "http"), service
    assert admitted(manifests, pods["api"], STRANGER, "http")  # apiFrom empty: everyone


STRIMZI = {"strimzi.io/cluster": "labelloop-kafka", "strimzi.io/kind": "Kafka"}
MINIO = {"app.kubernetes.io/name": "minio", "app.kubernetes.io/instance": "labelloop-minio"}
POSTGRES = {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/instance": "labelloop-pg"}
KEDA = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}


def test_no_dependency_policy_without_its_pods() -> None:
    """Kafka, S3 and PostgreSQL are external by default: nothing to select in the release."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for dependency in ("kafka", "s3", "database"):
        assert values["networkPolicy"]["dependencies"][dependency]["podSelector"] == {}


def test_dependencies_admit_only_the_labelloop_pods_that_use_them(
    helm: Helm, tmp_path: Path
) -> None:
    dependencies = {
        "kafka": {
            "podSelector": STRIMZI,
            "from": [{"podSelector": {"matchLabels": STRIMZI}}, KEDA],
        },
        "s3": {"podSelector": MINIO},
        "database": {"podSelector": POSTGRES},
    }
    manifests = render_with(helm, tmp_path, {"networkPolicy": {"dependencies": dependencies}})
    pods = {**pod_labels(manifests), "stranger": STRANGER}
    services = {"api", "ingest", "jobgen", "webhooks", "labeler-assist", "trainer"}
    expected = {
        "kafka": services | {"topics"},
        "s3": services | {"triton"},
        "database": services | {"migrate"},
    }
    for dependency, labels in (("kafka", STRIMZI), ("s3", MINIO), ("database", POSTGRES)):
        policy = of_kind(manifests, "NetworkPolicy")[name_of(f"{dependency}-clients")]
        assert policy["spec"]["podSelector"] == {"matchLabels": labels}
        clients = {c for c, source in pods.items() if admitted(manifests, labels, source, 9092)}
        assert clients == expected[dependency], dependency
    # Kafka's own brokers (replication) and KEDA (lag) are the peers given besides.
    assert admitted(manifests, STRIMZI, STRIMZI, 9091)
    kafka_rule = of_kind(manifests, "NetworkPolicy")[name_of("kafka-clients")]["spec"]["ingress"]
    assert KEDA in kafka_rule[0]["from"]
    # A release that names other pods: its policies never select another release's pods.
    other = {**pods["ingest"], "app.kubernetes.io/instance": f"{RELEASE}-2"}
    assert not admitted(manifests, STRIMZI, other, 9092)


def test_policies_off_on_request(helm: Helm) -> None:
    assert not of_kind(helm.render("default", {"networkPolicy.enabled": False}), "NetworkPolicy")
