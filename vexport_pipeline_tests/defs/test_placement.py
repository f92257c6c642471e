"""Kubernetes on paper, checked: the Job each step of the export job becomes (built by dagster-k8s's own code from
the Helm values' run launcher settings, vexport's executor and the step's tags), the values file itself, the pod
settings and the executor switch. No cluster."""

import json
import sys

import dagster as dg
import pytest
import yaml
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_user_defined_k8s_config

from vexport_pipeline.core.errors import ConfigError
from vexport_pipeline.core.settings import Settings
from vexport_pipeline.definitions import defs
from vexport_pipeline.defs.placement import CELERY_QUEUE_TAG, CPU, GPU, executor, step_tags
from vexport_pipeline_tests.conftest import REPO

VALUES = yaml.safe_load((REPO / "docs" / "deploy" / "values.yaml").read_text())
USER_CODE = VALUES["dagster-user-deployments"]["deployments"][0]
LAUNCHER = VALUES["runLauncher"]["config"]["k8sRunLauncher"]


def step_job(tags: dict[str, str]) -> dict:
    """The Kubernetes Job of one step, as k8s_job_executor's step handler builds it: the run launcher's settings
    (from the chart values), then vexport's executor's config for every step, then the step's own
    `dagster-k8s/config` tag, each merged over the one before; then the Job."""
    every_step = executor("k8s").config_schema.resolve_config({}).value["config"]["step_k8s_config"]
    context = K8sContainerContext(env_secrets=[s["name"] for s in LAUNCHER["envSecrets"]], namespace="vexport")
    for k8s_config in (UserDefinedDagsterK8sConfig.from_dict(every_step), get_user_defined_k8s_config(tags)):
        context = context.merge(K8sContainerContext(run_k8s_config=k8s_config))
    config = DagsterK8sJobConfig(
        job_image=f"{USER_CODE['image']['repository']}:{USER_CODE['image']['tag']}",
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="vexport-dagster-instance",
        postgres_password_secret=VALUES["global"]["postgresqlSecretName"],  # what the chart hands the launcher
    )
    args = ["dagster", "api", "execute_step"]
    job = construct_dagster_k8s_job(config, args, "dagster-step-abc", context.run_k8s_config, component="step_worker")
    return job.to_dict()


def test_a_gpu_encode_step_asks_for_a_gpu_on_the_gpu_nodes_and_a_cpu_step_does_not(monkeypatch):
    for name in ("VEXPORT_K8S_CPU", "VEXPORT_K8S_MEMORY", "VEXPORT_K8S_GPU_SELECTOR"):
        monkeypatch.delenv(name, raising=False)
    gpu, cpu = step_job(step_tags(GPU)), step_job(step_tags(CPU))

    pod = gpu["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "6Gi"}
    assert pod["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in [
        {k: t[k] for k in ("key", "operator", "effect")} for t in pod["tolerations"]
    ]
    # the secrets of the values file reach the step, and Dagster's PostgreSQL password comes from its secret
    assert [e["secret_ref"]["name"] for e in container["env_from"]] == ["vexport-secrets", "vexport-s3"]
    [password] = [e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD"]
    assert password["value_from"]["secret_key_ref"]["name"] == "vexport-postgresql"

    pod = cpu["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "6Gi"},
        "limits": {"memory": "6Gi"},  # no GPU, and no CPU quota
        "claims": None,
    }
    assert not pod["node_selector"] and not pod["tolerations"]
    assert (step_tags(GPU)[CELERY_QUEUE_TAG], step_tags(CPU)[CELERY_QUEUE_TAG]) == ("gpu", "cpu")


def test_every_step_of_the_export_job_gets_a_pod_and_the_gpu_queue_steps_a_gpu(monkeypatch):
    for name in ("VEXPORT_K8S_CPU", "VEXPORT_K8S_MEMORY", "VEXPORT_K8S_GPU_SELECTOR"):
        monkeypatch.delenv(name, raising=False)
    job = defs().resolve_job_def("export_job")
    with_gpu, gpu_queue = set(), set()
    for handle in job.graph.iterate_node_handles():
        node = job.graph.get_node(handle)
        if not isinstance(node.definition, dg.OpDefinition):
            continue  # a graph asset's graph: its ops are steps, it is not
        [container] = step_job(node.tags)["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"] == {"cpu": "8", "memory": "6Gi"}, handle  # untagged steps too
        if "nvidia.com/gpu" in container["resources"]["limits"]:
            with_gpu.add(str(handle))
        if node.tags.get(CELERY_QUEUE_TAG) == GPU:
            gpu_queue.add(str(handle))
    assert with_gpu == gpu_queue and with_gpu  # the hardware encodes, and nothing else


def test_the_settings_size_the_pods(monkeypatch):
    monkeypatch.setenv("VEXPORT_K8S_GPU_SELECTOR", "cloud.google.com/gke-accelerator=nvidia-l4, pool=encode")
    monkeypatch.setenv("VEXPORT_K8S_CPU", "7500m")
    monkeypatch.setenv("VEXPORT_K8S_MEMORY", "6Gi")
    pod = step_job(step_tags(GPU))["spec"]["template"]["spec"]
    assert pod["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "encode"}
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "7500m", "memory": "6Gi"}
    assert json.loads(step_tags(CPU)["dagster-k8s/config"])["container_config"]["resources"]["limits"] == {
        "memory": "6Gi"
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VEXPORT_K8S_GPU_SELECTOR", "nvidia.com/gpu.present", "is not node labels key=value"),
        ("VEXPORT_K8S_GPU_SELECTOR", "a=b,=c", "is not node labels key=value"),
        ("VEXPORT_K8S_CPU", "four", "is not a Kubernetes quantity like '8'"),
        ("VEXPORT_K8S_MEMORY", "4GB", "is not a Kubernetes quantity like '6Gi'"),
    ],
)
def test_pod_settings_that_kubernetes_would_refuse_are_refused_when_read(name, value, message):
    with pytest.raises(ConfigError, match=message) as refused:
        Settings.from_env({name: value})
    assert refused.value.where == name and refused.value.exit_code == 2


def _config(name: str, run_config: dict) -> dict:
    return executor(name).config_schema.resolve_config({"config": run_config}).value["config"]


@dg.op
def _parent_command() -> list[str]:
    import os

    import psutil

    return psutil.Process(os.getppid()).cmdline()


@dg.job(executor_def=executor("multiprocess"))
def _one_step():
    _parent_command()


def test_steps_fork_from_a_server_that_imported_the_definitions_unless_run_config_says_otherwise():
    """Dagster's default executor spawns a fresh interpreter per step (2 to 3 s of imports each on 2 cores); vexport's
    forks steps from a forkserver that preloaded the definitions. Run config may still choose."""
    assert _config("multiprocess", {"multiprocess": {}})["multiprocess"]["start_method"] == {
        "forkserver": {"preload_modules": ["vexport_pipeline.definitions"]}
    }
    assert _config("multiprocess", {"multiprocess": {"start_method": {"spawn": {}}}})["multiprocess"][
        "start_method"
    ] == {"spawn": {}}
    assert "multiprocess" not in _config("multiprocess", {"in_process": {}})
    with dg.instance_for_test() as instance, dg.execute_job(dg.reconstructable(_one_step), instance) as result:
        parent = result.output_for_node("_parent_command")
    assert "multiprocessing.forkserver" in " ".join(parent) and "vexport_pipeline.definitions" in " ".join(parent)


def test_the_executor_setting_names_an_executor_and_refuses_the_rest(monkeypatch):
    assert executor("k8s").name == k8s_job_executor.name == "k8s"
    assert executor("multiprocess").name == dg.multi_or_in_process_executor.name
    assert executor("inprocess") is dg.in_process_executor
    with pytest.raises(ConfigError, match="'kubernetes' is not one of multiprocess, inprocess, k8s") as refused:
        executor("kubernetes")
    assert refused.value.where == "VEXPORT_EXECUTOR"
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # an install without the `k8s` extra
    with pytest.raises(ConfigError, match=r"pip install 'vexport-pipeline\[k8s\]'"):
        executor("k8s")


def test_the_helm_values_give_the_chart_what_vexport_needs():
    import tomllib

    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    # PostgreSQL: an external server, its password from a secret the chart does not make
    assert VALUES["postgresql"]["enabled"] is False and VALUES["postgresql"]["postgresqlHost"]
    assert VALUES["generatePostgresqlPasswordSecret"] is False
    assert VALUES["global"]["postgresqlSecretName"] == "vexport-postgresql"
    # the code location serves the module Dagster is pointed at, in production, with the k8s executor
    module = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert VALUES["dagster-user-deployments"]["enabled"] is True
    assert USER_CODE["dagsterApiGrpcArgs"] == ["-m", module]
    assert USER_CODE["includeConfigInLaunchedRuns"]["enabled"] is True
    env = USER_CODE["env"]
    assert env["VEXPORT_DEPLOYMENT"] == "production" and env["VEXPORT_EXECUTOR"] == "k8s"
    pod_settings = Settings.from_env({**env, "VEXPORT_SECRET_KEY": "from-the-secret"})  # the values parse
    assert pod_settings.k8s_gpu_selector == (("nvidia.com/gpu.present", "true"),)
    # VEXPORT_SECRET_KEY, the event store and S3 credentials come from secrets, on the code location and every run
    for holder in (USER_CODE, LAUNCHER):
        assert [s["name"] for s in holder["envSecrets"]] == ["vexport-secrets", "vexport-s3"]
    assert not {"VEXPORT_SECRET_KEY", "VEXPORT_EVENTS_URL", "VEXPORT_POSTGRES_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert pod_settings.artifacts.startswith("s3://")  # steps hand each other files through S3, not a shared disk
    assert VALUES["computeLogManager"]["type"] == "S3ComputeLogManager"
    # the daemon queues runs with every one of dagster.yaml's tag limits (sized for a cluster, so the counts of
    # the per-value limits differ; the per-owner one is the same)
    daemon = VALUES["dagsterDaemon"]
    assert daemon["enabled"] and daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["concurrency"]
    limits = local["runs"]["tag_concurrency_limits"]
    assert [(t["key"], t["value"]) for t in queued] == [(t["key"], t["value"]) for t in limits]
    per_owner = {json.dumps(t) for t in (*queued, *limits) if t["value"] == {"applyLimitPerUniqueValue": True}}
    assert len(per_owner) == 1
    assert VALUES["concurrency"]["pools"]["granularity"] == local["pools"]["granularity"] == "op"
