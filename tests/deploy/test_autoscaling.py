"""KEDA ScaledObjects watch the consumer groups and topics the code really uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from labelloop.composition import load_service, service_names
from labelloop.config import Settings
from tests.deploy.conftest import (
    CHART,
    CONSUMERS,
    PROFILES,
    Helm,
    component,
    name_of,
    of_kind,
)
from trainer.queue import QUEUE_DEPTH_QUERY

KEDA_SPEC_FIELDS = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "idleReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
"""ScaledObject spec fields KEDA documents (keda.sh/docs, "Scaling Deployments")."""
POSTGRESQL_METADATA = {
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
    "connectionFromEnv",
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
    "passwordFromEnv",
}
"""The PostgreSQL scaler's metadata (keda.sh/docs, "PostgreSQL")."""
KAFKA_METADATA = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}
KAFKA_OPTIONAL = {
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "version",
    "sasl",
    "tls",
}


def code_consumption(name: str, prefix: str = "", group_prefix: str = "") -> tuple[str, set[str]]:
    """A service's consumer group and broker-side topics, from its app module and Settings."""
    service = load_service(name)
    settings = Settings(kafka_topic_prefix=prefix, kafka_group_prefix=group_prefix)
    topics = {settings.topic(topic) for topic in service.subscribers.topics}
    return settings.consumer_group(service.IDENTITY.consumer_group), topics


def scaled_consumption(scaled_object: dict[str, Any]) -> tuple[str, set[str]]:
    triggers = [t for t in scaled_object["spec"]["triggers"] if t.get("type", "kafka") == "kafka"]
    groups = {t["metadata"]["consumerGroup"] for t in triggers}
    assert len(groups) == 1, f"one consumer group per service, got {groups}"
    topics = [t["metadata"]["topic"] for t in triggers]
    assert len(topics) == len(set(topics)), "one trigger per topic"
    return groups.pop(), set(topics)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_scaled_objects_follow_the_keda_schema(
    rendered: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    manifests = rendered[profile]
    deployments = of_kind(manifests, "Deployment")
    scaled = of_kind(manifests, "ScaledObject")
    trainer = {"trainer"} if profile == "trainer-cluster" else set()
    assert {component(s) for s in scaled.values()} == set(CONSUMERS) | trainer
    for name, scaled_object in scaled.items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        assert set(spec) <= KEDA_SPEC_FIELDS, set(spec) - KEDA_SPEC_FIELDS
        target = spec["scaleTargetRef"]["name"]
        assert target in deployments, f"{name} scales {target}, which is not rendered"
        assert component(deployments[target]) == component(scaled_object)
        # KEDA owns the replica count through its HPA: a fixed one would fight it on upgrades.
        assert "replicas" not in deployments[target]["spec"]
        low, high = spec["minReplicaCount"], spec["maxReplicaCount"]
        assert type(low) is int and type(high) is int and 0 <= low <= high
        assert type(spec["pollingInterval"]) is int and type(spec["cooldownPeriod"]) is int
        assert spec["triggers"]
        for trigger in spec["triggers"]:
            if trigger["type"] == "postgresql":
                assert component(scaled_object) == "trainer", "only the trainer's queue"
                assert set(trigger["metadata"]) <= POSTGRESQL_METADATA
                continue
            assert trigger["type"] == "kafka"
            metadata = trigger["metadata"]
            assert KAFKA_METADATA <= set(metadata) <= KAFKA_METADATA | KAFKA_OPTIONAL
            assert all(isinstance(value, str) and value for value in metadata.values())
            assert int(metadata["lagThreshold"]) > 0
            assert metadata["bootstrapServers"] == "labelloop-kafka-kafka-bootstrap:9092"
            assert metadata["offsetResetPolicy"] == "earliest"


@pytest.mark.parametrize(("prefix", "group_prefix"), [("", ""), ("prod.", ""), ("", "eu-")])
def test_scaled_objects_watch_the_groups_and_topics_the_code_consumes(
    helm: Helm, prefix: str, group_prefix: str
) -> None:
    values = {"kafka.topicPrefix": prefix, "kafka.groupPrefix": group_prefix}
    scaled = of_kind(helm.render("trainer-cluster", values), "ScaledObject")
    assert len(scaled) == len(CONSUMERS) + 1, "and the trainer"
    for scaled_object in scaled.values():
        name = component(scaled_object)
        expected = code_consumption(name, prefix, group_prefix)
        assert scaled_consumption(scaled_object) == expected, name


def test_consumers_file_matches_every_service_module() -> None:
    """files/consumers.yaml (the chart's copy) equals each app module's constants."""
    consumers = yaml.safe_load(Path(CHART / "files" / "consumers.yaml").read_text())
    assert set(consumers) == set(service_names())
    for name, entry in consumers.items():
        group, topics = code_consumption(name)
        assert entry["consumerGroup"] == group, name
        assert set(entry["topics"]) == topics, name
        assert len(entry["topics"]) == len(topics), name


def test_consumer_check_would_catch_a_wrong_group() -> None:
    wrong = {
        "spec": {
            "triggers": [
                {"metadata": {"consumerGroup": "labelloop-ingester", "topic": "storage.objects"}}
            ]
        }
    }
    assert scaled_consumption(wrong) != code_consumption("ingest")


def test_the_api_is_never_scaled_on_lag_nor_the_trainer_unless_asked(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for profile, manifests in rendered.items():
        scaled_targets = {component(s) for s in of_kind(manifests, "ScaledObject").values()}
        assert "api" not in scaled_targets
        hpas = of_kind(manifests, "HorizontalPodAutoscaler")
        assert {component(h) for h in hpas.values()} == {"api"}
        api_hpa = hpas[name_of("api")]["spec"]
        assert api_hpa["minReplicas"] >= 1
        trainer = of_kind(manifests, "Deployment")[name_of("trainer")]["spec"]
        assert "strategy" not in trainer, "trainers share the queue: a rolling update is safe"
        if profile != "trainer-cluster":
            assert "trainer" not in scaled_targets and trainer["replicas"] == 1


def test_the_trainer_scales_from_zero_on_its_queue(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    manifests = rendered["trainer-cluster"]
    spec = of_kind(manifests, "ScaledObject")[name_of("trainer")]["spec"]
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] == 8
    deployment = of_kind(manifests, "Deployment")[name_of("trainer")]["spec"]
    assert "replicas" not in deployment, "KEDA owns the count"
    [queue] = [t for t in spec["triggers"] if t["type"] == "postgresql"]
    metadata = queue["metadata"]
    assert metadata["query"] == QUEUE_DEPTH_QUERY, "the query the trainer's tests run"
    assert metadata["targetQueryValue"] == "1" and metadata["activationTargetQueryValue"] == "0"
    assert metadata["host"] == "labelloop-postgresql" and metadata["sslmode"] == "require"
    assert metadata["passwordFromEnv"] == "LABELLOOP_DATABASE_PASSWORD"
    pod = deployment["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "valueFrom" in env["LABELLOOP_DATABASE_PASSWORD"], "KEDA reads it from the pod"
    assert env["LABELLOOP_TRAINER_MAX_CONCURRENT_RUNS"]["value"] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, "each pod asks for its GPU"
    # lag on the trainer's topics wakes a pod at zero: it queues the threshold crossings
    assert scaled_consumption({"spec": spec}) == code_consumption("trainer")
    # trainers and Triton on separate GPU pools
    triton = of_kind(manifests, "Deployment")[name_of("triton")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["labelloop.io/pool"] == "training"
    assert triton["nodeSelector"]["labelloop.io/pool"] == "inference"
    assert {t.get("value") for t in pod["tolerations"]} >= {"training"}


def test_the_trainer_queue_with_a_database_url_needs_its_own_connection(helm: Helm) -> None:
    values = {"database.urlKey": "url", "database.host": ""}
    error = helm.render_error("trainer-cluster", values)
    assert "services.trainer.autoscaling.connectionKey" in error
    manifests = helm.render(
        "trainer-cluster", {**values, "services.trainer.autoscaling.connectionKey": "libpq"}
    )
    [auth] = [
        a
        for a in of_kind(manifests, "TriggerAuthentication").values()
        if "queue" in a["metadata"]["name"]
    ]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "labelloop-postgresql", "key": "libpq"}
    ]
    spec = of_kind(manifests, "ScaledObject")[name_of("trainer")]["spec"]
    [queue] = [t for t in spec["triggers"] if t["type"] == "postgresql"]
    assert queue["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert "host" not in queue["metadata"]


def test_scale_to_zero_profile(rendered: dict[str, list[dict[str, Any]]]) -> None:
    scaled = {
        component(s): s["spec"] for s in of_kind(rendered["scale-to-zero"], "ScaledObject").values()
    }
    assert {name for name, spec in scaled.items() if spec["minReplicaCount"] == 0} == {
        "ingest",
        "jobgen",
        "labeler-assist",
    }
    # The dispatcher's retry timers live in the database: webhooks keeps a pod.
    assert scaled["webhooks"]["minReplicaCount"] >= 1
    default = {
        component(s): s["spec"] for s in of_kind(rendered["default"], "ScaledObject").values()
    }
    assert all(spec["minReplicaCount"] >= 1 for spec in default.values())


def test_hpa_fallback_without_keda(helm: Helm) -> None:
    manifests = helm.render("scale-to-zero", {"keda.enabled": False})
    assert not of_kind(manifests, "ScaledObject")
    hpas = {component(h): h["spec"] for h in of_kind(manifests, "HorizontalPodAutoscaler").values()}
    assert set(hpas) == {"api", *CONSUMERS}
    deployments = of_kind(manifests, "Deployment")
    for name, spec in hpas.items():
        # An HPA cannot scale to zero: the scale-to-zero profile's 0 becomes 1.
        assert spec["minReplicas"] >= 1, name
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name_of(name),
        }
        assert "replicas" not in deployments[name_of(name)]["spec"]
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_fixed_replicas_without_autoscaling(helm: Helm) -> None:
    manifests = helm.render(
        "default", {"services.ingest.autoscaling.enabled": False, "services.ingest.replicas": 2}
    )
    assert name_of("ingest") not in of_kind(manifests, "ScaledObject")
    assert of_kind(manifests, "Deployment")[name_of("ingest")]["spec"]["replicas"] == 2
