"""Where steps run: the tags that send encode steps needing a hardware encoder to GPU workers and every
other step to CPU workers, for each executor that reads step tags (Celery queues; Kubernetes job specs),
and the executor a deployment runs its steps with (docs/deployment.md)."""

from __future__ import annotations

import json

import dagster as dg

from vexport_pipeline.core.errors import ConfigError
from vexport_pipeline.core.settings import EXECUTORS, current

GPU, CPU = "gpu", "cpu"
CELERY_QUEUE_TAG = "dagster-celery/queue"
K8S_CONFIG_TAG = "dagster-k8s/config"
# GKE, EKS and NVIDIA's GPU operator taint GPU nodes with this key, so that only pods that tolerate it land there
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def step_tags(kind: str = CPU) -> dict[str, str]:
    """Op tags for a step of this kind (`gpu` or `cpu`): its Celery queue and its Kubernetes pod. The pod's size
    comes from the `VEXPORT_K8S_*` settings of the code location, read when the op is defined."""
    if kind not in (GPU, CPU):
        raise ValueError(f"step kind {kind!r}: expected {GPU} or {CPU}")
    return {CELERY_QUEUE_TAG: kind, K8S_CONFIG_TAG: json.dumps(_pod(kind))}


def _pod(kind: str) -> dict:
    """The `dagster-k8s/config` of a step. Memory is requested and is the limit too: an encode that outgrows it is
    stopped instead of starving its neighbours. CPU has no limit: a quota only slows an encode on an idle node.
    A GPU step also asks for one GPU, on the GPU nodes, through their taint; it keeps the CPU request because
    without NVENC (H100, H200) it encodes on the CPU."""
    s = current()
    resources = {"requests": {"cpu": s.k8s_cpu, "memory": s.k8s_memory}, "limits": {"memory": s.k8s_memory}}
    if kind == CPU:
        return {"container_config": {"resources": resources}}
    resources["limits"]["nvidia.com/gpu"] = "1"
    return {
        "container_config": {"resources": resources},
        "pod_spec_config": {"node_selector": dict(s.k8s_gpu_selector), "tolerations": [GPU_TOLERATION]},
    }


def _forkserver(config: dict) -> dict:
    """Step processes forked from a server that imported the definitions once, unless run config picks a start
    method (or `in_process`): spawned ones import them again, 2 to 3 s per step on 2 cores."""
    if "multiprocess" not in config:
        return config
    preload = {"preload_modules": [PRELOAD]}
    return {"multiprocess": {"start_method": {"forkserver": preload}, **config["multiprocess"]}}


# Dagster's default executor, the same config (run config may still say `in_process` or a start method), with the
# forkserver start method as its default, preloading the definitions (Dagster preloads nothing when the config
# names no modules).
PRELOAD = "vexport_pipeline.definitions"
MULTIPROCESS = dg.multi_or_in_process_executor.configured(
    _forkserver, config_schema=dg.multi_or_in_process_executor.config_schema, name="multi_or_in_process_executor"
)


def executor(name: str) -> dg.ExecutorDefinition:
    """The executor named by a deployment's setting: `multiprocess` (Dagster's default: a process per step beside
    the run, or all in the run's process when run config says `in_process`), `inprocess` (every step in the run's
    own process: one pod per run under K8sRunLauncher), `k8s` (a Kubernetes Job per step, sized by
    `step_tags`), or `celery` (a Celery task per step, on the queue `step_tags` names)."""
    if name == "multiprocess":
        return MULTIPROCESS
    if name == "inprocess":
        return dg.in_process_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor  # the optional `k8s` extra: imported where it is chosen
        except ImportError:
            raise ConfigError(
                "k8s needs dagster-k8s: pip install 'vexport-pipeline[k8s]'", where="VEXPORT_EXECUTOR"
            ) from None
        # every step gets the CPU pod, so none runs without requests; a step's own tag (a GPU encode's) is merged
        # over it. Namespace, image and secrets come from the run launcher.
        return k8s_job_executor.configured({"step_k8s_config": _pod(CPU)}, name="k8s")
    if name == "celery":
        return _celery()
    raise ConfigError(f"{name!r} is not one of {', '.join(EXECUTORS)}", where="VEXPORT_EXECUTOR")


def _celery() -> dg.ExecutorDefinition:
    """Each step a Celery task on the queue its `dagster-celery/queue` tag names, through VEXPORT_CELERY_BROKER
    (broker and result backend): steps without the tag go to `cpu` too, so no step waits on a queue nobody
    serves. Workers with homes of their own (`make dev-cluster`, defs/cluster.py) hand each other files through
    the artifact store, VEXPORT_ARTIFACTS."""
    from dagster_celery import celery_executor

    s = current()
    config = {"broker": s.celery_broker, "backend": s.celery_broker, "config_source": {"task_default_queue": CPU}}
    return celery_executor.configured(config, name="celery")
