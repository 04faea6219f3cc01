"""values.schema.json refuses wrong values at install time, before anything is rendered."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import Helm, of_kind

SCHEMA_ERROR = "values don't meet the specifications of the schema"

WRONG_VALUES = [
    pytest.param({"kafka.bootstrapServer": "kafka:9092"}, "bootstrapServer", id="typo-in-a-key"),
    pytest.param({"services.trainer.replicas": -1}, "replicas", id="negative-trainers"),
    pytest.param({"services.trainer.runsPerPod": 0}, "runsPerPod", id="no-runs-a-pod"),
    pytest.param({"services.trainer.autoscaling.maxReplicas": 0}, "maxReplicas", id="no-trainer"),
    pytest.param({"services.api.autoscaling.minReplicas": 0}, "minReplicas", id="api-to-zero"),
    pytest.param({"services.ingest.autoscaling.maxReplicas": 0}, "maxReplicas", id="max-zero"),
    pytest.param({"services.jobgen.autoscaling.lagThreshold": "many"}, "lagThreshold", id="type"),
    pytest.param({"securityContext.readOnlyRootFilesystem": False}, "readOnly", id="writable-root"),
    pytest.param({"podSecurityContext.runAsUser": 0}, "runAsUser", id="root"),
    pytest.param({"logLevel": "VERBOSE"}, "logLevel", id="enum"),
    pytest.param({"s3.endpoint": "http://minio:9000"}, "endpoint", id="scheme-in-endpoint"),
    pytest.param({"kafka.bootstrapServers": "kafka"}, "bootstrapServers", id="no-port"),
    pytest.param({"config.LABELLOOP_API_PORT": "9000"}, "LABELLOOP_API_PORT", id="reserved"),
    pytest.param({"config.WEBHOOK_ALLOWLIST": "10.0.0.0/8"}, "WEBHOOK_ALLOWLIST", id="no-prefix"),
    pytest.param({"triton.gpu.count": 0}, "count", id="zero-gpus"),
    pytest.param({"services.webhooks.autoscaling.minReplicas": -1}, "minReplicas", id="negative"),
]


@pytest.mark.parametrize(("values", "where"), WRONG_VALUES)
def test_schema_rejects_a_wrong_value(helm: Helm, values: dict[str, object], where: str) -> None:
    error = helm.render_error("default", values)
    assert SCHEMA_ERROR in error
    assert where in error


def test_good_values_of_the_same_keys_pass(helm: Helm) -> None:
    """The refusals above are about the values, not the keys."""
    manifests = helm.render(
        "default",
        {
            "services.trainer.replicas": 3,
            "services.trainer.runsPerPod": 2,
            "services.api.autoscaling.minReplicas": 1,
            "services.jobgen.autoscaling.lagThreshold": 5,
            "podSecurityContext.runAsUser": 20000,
            "logLevel": "DEBUG",
            "config.LABELLOOP_WEBHOOK_ALLOWLIST": "10.0.0.0/8",
            "kafka.bootstrapServers": "a:9092,b:9092",
        },
    )
    (config,) = of_kind(manifests, "ConfigMap").values()
    assert config["data"]["LABELLOOP_WEBHOOK_ALLOWLIST"] == "10.0.0.0/8"
    assert config["data"]["LABELLOOP_LOG_LEVEL"] == "DEBUG"
    assert config["data"]["LABELLOOP_KAFKA_BOOTSTRAP_SERVERS"] == "a:9092,b:9092"


def test_connection_values_are_required(helm: Helm) -> None:
    error = helm.render_error(profile=None)
    assert SCHEMA_ERROR in error
    assert "bootstrapServers" in error and "endpoint" in error


def test_database_host_is_required_without_a_url_key(helm: Helm) -> None:
    error = helm.render_error("default", {"database.host": ""})
    assert "database.host is required" in error
