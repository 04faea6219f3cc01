"""The rendered chart judged by Kubernetes itself: a real kube-apiserver (with etcd, KEDA's and
the Prometheus Operator's CRDs) admits every profile, server-side and with strict field
validation, and refuses a manifest with a field it does not know."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from labelloop.config import Settings
from tests.deploy.conftest import NAMESPACE, PROFILES, Helm, name_of
from tests.deploy.kube_api import KubeApi
from tests.deploy.test_chart import EVERYTHING_ON

APPLY = ["apply", "--server-side", "--field-manager=labelloop-tests", "--validate=strict"]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    api = KubeApi(tmp_path_factory.mktemp("kube"), Settings().cache_dir)
    try:
        api.start()
        api.kubectl("create", "namespace", NAMESPACE)
        yield api
    finally:
        api.stop()


def as_yaml(manifests: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_api_server_admits_every_profile(kube: KubeApi, helm: Helm, profile: str) -> None:
    manifests = helm.render(profile, EVERYTHING_ON)
    result = kube.kubectl(
        *APPLY, "--dry-run=server", "-n", NAMESPACE, "-f", "-", stdin=as_yaml(manifests)
    )
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "ScaledObject", "ServiceMonitor", "NetworkPolicy"} <= kinds
    assert result.stdout.count("serverside-applied") == len(manifests), result.stdout


def test_the_trainer_cluster_profile_is_stored_as_rendered(kube: KubeApi, helm: Helm) -> None:
    manifests = helm.render("trainer-cluster")
    kube.kubectl(*APPLY, "-n", NAMESPACE, "-f", "-", stdin=as_yaml(manifests))
    stored = json.loads(
        kube.kubectl(
            "get", "scaledobjects.keda.sh", name_of("trainer"), "-n", NAMESPACE, "-o", "json"
        ).stdout
    )
    triggers = {t["type"]: t for t in stored["spec"]["triggers"]}
    assert stored["spec"]["minReplicaCount"] == 0 and set(triggers) == {"kafka", "postgresql"}
    assert "training_requests" in triggers["postgresql"]["metadata"]["query"]
    deployment = json.loads(
        kube.kubectl("get", "deployment", name_of("trainer"), "-n", NAMESPACE, "-o", "json").stdout
    )
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", "the server's default"
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_the_api_server_refuses_what_it_does_not_know(kube: KubeApi, helm: Helm) -> None:
    manifests = helm.render("trainer-cluster")
    [scaled] = [
        m
        for m in manifests
        if m["kind"] == "ScaledObject" and m["metadata"]["name"] == name_of("trainer")
    ]
    scaled["spec"]["minReplicas"] = 0  # KEDA's field is minReplicaCount
    refused = kube.kubectl(
        *APPLY, "--dry-run=server", "-n", NAMESPACE, "-f", "-", stdin=as_yaml([scaled]),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "minReplicas" in refused.stderr
    [deployment] = [
        m
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == name_of("api")
    ]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    refused = kube.kubectl(
        *APPLY, "--dry-run=server", "-n", NAMESPACE, "-f", "-", stdin=as_yaml([deployment]),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "imagePullPolicy" in refused.stderr
