"""What each workload runs: the service it serves, GPUs, Triton's repository, the migrations."""

from __future__ import annotations

import re
from typing import Any

from typer.testing import CliRunner

from labelloop.cli import app
from labelloop.composition import service_names
from tests.deploy.conftest import CHART, REPO, SERVICES, Helm, name_of, of_kind, pod_specs

GPU = "nvidia.com/gpu"


def test_each_deployment_serves_its_own_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployments = of_kind(rendered["default"], "Deployment")
    for service in SERVICES:
        (container,) = deployments[name_of(service)]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["serve", "--service", service]
        assert service in service_names()
        assert container["image"] == "labelloop:0.1.0"
        assert {"configMapRef": {"name": name_of("config")}} in container["envFrom"]


def test_no_gpu_in_the_default_profile(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, pod in pod_specs(rendered["default"]).items():
        for container in pod["containers"]:
            assert GPU not in container["resources"].get("limits", {}), name
            assert not container["image"].endswith("-gpu"), name
        assert "tolerations" not in pod, name


def test_gpu_profile_puts_trainer_and_triton_on_gpu_nodes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    pods = pod_specs(rendered["gpu"])
    for workload in ("trainer", "triton"):
        pod = pods[name_of(workload)]
        (container,) = pod["containers"]
        assert container["resources"]["limits"][GPU] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    trainer = pods[name_of("trainer")]
    assert trainer["containers"][0]["image"] == "labelloop:0.1.0-gpu"
    shm = {v["name"]: v for v in trainer["volumes"]}["shm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    for name, pod in pods.items():
        if name not in {name_of("trainer"), name_of("triton")}:
            assert GPU not in pod["containers"][0]["resources"].get("limits", {}), name


def _triton(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = of_kind(manifests, "Deployment")[name_of("triton")]
    assert deployment["spec"]["replicas"] == 1  # models are loaded into one pod
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_triton_reads_its_repository_from_s3(rendered: dict[str, list[dict[str, Any]]]) -> None:
    container = _triton(rendered["gpu"])
    assert container["command"] == ["tritonserver"]
    assert "--model-control-mode=explicit" in container["args"]
    assert (
        "--model-repository=s3://labelloop-minio:9000/labelloop/triton-models"
        in (container["args"])
    )
    env = {e["name"]: e for e in container["env"]}
    for variable, key in (
        ("AWS_ACCESS_KEY_ID", "access-key"),
        ("AWS_SECRET_ACCESS_KEY", "secret-key"),
    ):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "labelloop-s3", "key": key}
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"


def test_triton_repository_over_https(helm: Helm) -> None:
    container = _triton(
        helm.render("default", {"s3.secure": True, "s3.endpoint": "s3.example:443"})
    )
    assert (
        "--model-repository=s3://https://s3.example:443/labelloop/triton-models"
        in (container["args"])
    )
    container = _triton(helm.render("default", {"triton.modelRepository": "s3://models/triton"}))
    assert "--model-repository=s3://models/triton" in container["args"]


def test_triton_can_be_left_out(helm: Helm) -> None:
    manifests = helm.render("default", {"triton.enabled": False})
    assert name_of("triton") not in of_kind(manifests, "Deployment")
    (config,) = of_kind(manifests, "ConfigMap").values()
    assert config["data"]["LABELLOOP_TRITON_ENABLED"] == "false"


def test_migration_hook_runs_db_upgrade_first(rendered: dict[str, list[dict[str, Any]]]) -> None:
    job = of_kind(rendered["default"], "Job")[name_of("migrate")]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["db", "upgrade"]
    # A pre-install hook runs before the release's other resources exist.
    assert "envFrom" not in container
    assert "serviceAccountName" not in pod
    env = {e["name"]: e for e in container["env"]}
    assert "$(LABELLOOP_DATABASE_PASSWORD)" in env["LABELLOOP_DATABASE_URL"]["value"]


def test_topics_hook_creates_the_topics_with_the_services_settings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    job = of_kind(rendered["default"], "Job")[name_of("topics")]
    annotations = job["metadata"]["annotations"]
    # after install: the ConfigMap it reads exists by then
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics"]
    assert container["envFrom"] == [{"configMapRef": {"name": name_of("config")}}]
    (config,) = of_kind(rendered["default"], "ConfigMap").values()
    assert config["data"]["LABELLOOP_KAFKA_REPLICATION_FACTOR"] == "3"
    assert config["data"]["LABELLOOP_KAFKA_PARTITIONS"] == "6"
    secrets = [e for e in container["env"] if "valueFrom" in e]
    assert secrets and all("secretKeyRef" in e["valueFrom"] for e in secrets)


def test_topics_hook_can_be_left_to_another_operator(helm: Helm) -> None:
    manifests = helm.render(values={"kafka.createTopics": False})
    assert name_of("topics") not in of_kind(manifests, "Job")


def test_the_commands_the_chart_runs_exist() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "--help"]).exit_code == 0
    assert runner.invoke(app, ["topics", "--help"]).exit_code == 0
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--service" in result.output
    assert runner.invoke(app, ["db", "nonsense"]).exit_code != 0


def test_image_runs_as_the_user_the_chart_expects() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    values = (CHART / "values.yaml").read_text()
    uid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert uid, "the image names its user numerically (runAsNonRoot can only check a number)"
    assert f"runAsUser: {uid.group(1)}" in values and f"runAsGroup: {uid.group(2)}" in values
    assert 'ENTRYPOINT ["tini", "--", "labelloop"]' in dockerfile
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE)
    assert stages[-1] == "cpu" and "gpu" in stages, "CPU is the default target, gpu the other"
    assert "LABELLOOP_VAR_DIR=/var/lib/labelloop" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored)
