"""Kafka SASL_SSL by default: every pod that talks to Kafka (the six services and the topics
Job) gets the protocol, the username, the password by reference and the CA; KEDA reads lag
with the same credentials; the settings those pods build are accepted by ``Settings``; and an
install that would let clients in without credentials is refused."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from labelloop.config import Settings
from labelloop.messaging.security import kafka_security_options
from tests.deploy.conftest import (
    CHART,
    CONSUMERS,
    PROFILES,
    SERVICES,
    Helm,
    name_of,
    of_kind,
    pod_specs,
)

KAFKA_PODS = {name_of(service) for service in SERVICES} | {name_of("topics")}
NO_KAFKA = {name_of("triton"), name_of("migrate")}
TLS_DIR = "/etc/labelloop/kafka"


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def test_sasl_ssl_with_scram_is_the_default() -> None:
    kafka = yaml.safe_load((CHART / "values.yaml").read_text())["kafka"]
    assert kafka["securityProtocol"] == "SASL_SSL"
    assert kafka["sasl"]["mechanism"] == "SCRAM-SHA-512"
    assert kafka["allowUnauthenticated"] is False


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_kafka_pod_authenticates_and_checks_the_broker(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    manifests = rendered[profile]
    (config,) = of_kind(manifests, "ConfigMap").values()
    data = config["data"]
    assert data["LABELLOOP_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["LABELLOOP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["LABELLOOP_KAFKA_SSL_CAFILE"] == f"{TLS_DIR}/ca.crt"
    pods = pod_specs(manifests)
    assert set(pods) == KAFKA_PODS | NO_KAFKA
    for name in KAFKA_PODS:
        pod = pods[name]
        (container,) = pod["containers"]
        env = _env(container)
        assert env["LABELLOOP_KAFKA_SASL_USERNAME"]["value"] == "labelloop", name
        assert env["LABELLOOP_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "labelloop",
            "key": "password",
        }, name
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[TLS_DIR]["readOnly"] is True, name
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[TLS_DIR]["name"]]
        (source,) = volume["projected"]["sources"]
        assert source["secret"] == {
            "name": "labelloop-kafka-cluster-ca-cert",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }, name
        assert volume["projected"]["defaultMode"] == 0o440, name
    for name in NO_KAFKA:
        (container,) = pods[name]["containers"]
        assert not [e for e in _env(container) if e.startswith("LABELLOOP_KAFKA_SASL")], name
        assert TLS_DIR not in {m["mountPath"] for m in container["volumeMounts"]}, name


def test_the_pods_settings_are_valid_cluster_settings(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a pod's environment holds builds ``Settings`` in cluster mode, and the clients
    connect with SASL_SSL/SCRAM-SHA-512 from it (the Secrets' values stand in here)."""
    manifests = rendered["default"]
    (config,) = of_kind(manifests, "ConfigMap").values()
    (container,) = pod_specs(manifests)[name_of("ingest")]["containers"]
    environment = dict(config["data"])
    for name, entry in _env(container).items():
        environment[name] = entry.get("value", f"value-of-{name}-from-its-secret-0123456789abcdef")
    for name, value in environment.items():
        monkeypatch.setenv(name, value.replace("$(LABELLOOP_DATABASE_PASSWORD)", "pw"))
    settings = Settings()
    assert settings.environment == "cluster"
    assert settings.kafka_ssl_cafile == f"{TLS_DIR}/ca.crt"
    monkeypatch.setattr(settings, "kafka_ssl_cafile", "")  # the CA is not mounted here
    options = kafka_security_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "labelloop"


def test_keda_reads_lag_with_the_same_credentials(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    manifests = rendered["default"]
    (auth,) = of_kind(manifests, "TriggerAuthentication").values()
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert set(auth["spec"]) <= {"secretTargetRef", "env", "configMapTargetRef"}
    references = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert references["password"] == {
        "parameter": "password",
        "name": "labelloop",
        "key": "password",
    }
    assert references["ca"]["name"] == "labelloop-kafka-cluster-ca-cert"
    (username,) = auth["spec"]["env"]
    assert username == {"parameter": "username", "name": "LABELLOOP_KAFKA_SASL_USERNAME"}
    deployments = of_kind(manifests, "Deployment")
    scaled = of_kind(manifests, "ScaledObject")
    assert len(scaled) == len(CONSUMERS)
    for scaled_object in scaled.values():
        # KEDA resolves `env` parameters from the scale target's container.
        target = deployments[scaled_object["spec"]["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        assert "LABELLOOP_KAFKA_SASL_USERNAME" in _env(container)
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
            assert trigger["metadata"]["sasl"] == "scram_sha512"
            assert trigger["metadata"]["tls"] == "enable"


def test_mutual_tls_mounts_the_client_certificate(helm: Helm) -> None:
    manifests = helm.render(
        "default",
        {
            "kafka.securityProtocol": "SSL",
            "kafka.sasl.username": "",
            "kafka.tls.clientSecret": "labelloop-kafka-client",
        },
    )
    (config,) = of_kind(manifests, "ConfigMap").values()
    assert config["data"]["LABELLOOP_KAFKA_SSL_CERTFILE"] == f"{TLS_DIR}/tls.crt"
    assert config["data"]["LABELLOOP_KAFKA_SSL_KEYFILE"] == f"{TLS_DIR}/tls.key"
    assert "LABELLOOP_KAFKA_SASL_MECHANISM" not in config["data"]
    pod = pod_specs(manifests)[name_of("topics")]
    assert "LABELLOOP_KAFKA_SASL_PASSWORD" not in _env(pod["containers"][0])
    volume = {v["name"]: v for v in pod["volumes"]}["kafka-tls"]
    client = volume["projected"]["sources"][1]["secret"]
    assert client["name"] == "labelloop-kafka-client"
    assert {item["path"] for item in client["items"]} == {"tls.crt", "tls.key"}
    (auth,) = of_kind(manifests, "TriggerAuthentication").values()
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"ca", "cert", "key"}
    assert "env" not in auth["spec"]


def test_a_chart_made_secret_holds_the_kafka_password_under_its_own_key(helm: Helm) -> None:
    manifests = helm.render(
        "default",
        {
            "secrets.create": True,
            "kafka.sasl.existingSecret": "",
            "database.existingSecret": "",
            "secrets.kafkaPassword": "k",
            "secrets.databasePassword": "d",
        },
    )
    (secret,) = of_kind(manifests, "Secret").values()
    assert {"kafka-password", "password"} <= set(secret["data"])
    (container,) = pod_specs(manifests)[name_of("api")]["containers"]
    reference = _env(container)["LABELLOOP_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": name_of("secrets"), "key": "kafka-password"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"kafka.securityProtocol": "PLAINTEXT", "kafka.tls.caSecret": ""},
            "authenticates no client",
            id="plaintext",
        ),
        pytest.param(
            {"kafka.securityProtocol": "SSL"}, "authenticates no client", id="tls-without-cert"
        ),
        pytest.param({"kafka.sasl.username": ""}, "kafka.sasl.username is required", id="user"),
        pytest.param(
            {"kafka.sasl.existingSecret": ""}, "kafka.sasl.existingSecret", id="no-password"
        ),
        pytest.param(
            {"kafka.securityProtocol": "SASL_PLAINTEXT"}, "uses no TLS", id="ca-without-tls"
        ),
        pytest.param(
            {
                "kafka.securityProtocol": "SASL_PLAINTEXT",
                "kafka.tls.caSecret": "",
                "kafka.sasl.mechanism": "PLAIN",
            },
            "password in clear",
            id="plain-in-clear",
        ),
    ],
)
def test_an_install_that_lets_clients_in_unchecked_is_refused(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in helm.render_error("default", values)


def test_plaintext_only_when_asked_for(helm: Helm) -> None:
    """For a broker its own NetworkPolicies keep to labelloop's pods (README.md)."""
    values = {
        "kafka.securityProtocol": "PLAINTEXT",
        "kafka.allowUnauthenticated": True,
        "kafka.sasl.username": "",
        "kafka.tls.caSecret": "",
    }
    manifests = helm.render("default", values)
    (config,) = of_kind(manifests, "ConfigMap").values()
    assert config["data"]["LABELLOOP_KAFKA_ALLOW_UNAUTHENTICATED"] == "true"
    assert not of_kind(manifests, "TriggerAuthentication")
    for scaled_object in of_kind(manifests, "ScaledObject").values():
        for trigger in scaled_object["spec"]["triggers"]:
            assert "authenticationRef" not in trigger
            assert not {"sasl", "tls"} & set(trigger["metadata"])
    assert Settings(
        environment="cluster",
        s3_access_key="a-real-key",
        s3_secret_key="a-real-secret",
        admin_token="0123456789abcdef" * 4,
        kafka_allow_unauthenticated=True,
    ).kafka_allow_unauthenticated


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"kafka.securityProtocol": "SASL"}, "securityProtocol"),
        ({"kafka.sasl.mechanism": "GSSAPI"}, "mechanism"),
        ({"config.LABELLOOP_KAFKA_SASL_PASSWORD": "x"}, "LABELLOOP_KAFKA_SASL_PASSWORD"),
        ({"config.LABELLOOP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "SECURITY_PROTOCOL"),
    ],
)
def test_the_schema_refuses_wrong_kafka_values(
    helm: Helm, values: dict[str, Any], where: str
) -> None:
    error = helm.render_error("default", values)
    assert "values don't meet the specifications of the schema" in error
    assert where in error
