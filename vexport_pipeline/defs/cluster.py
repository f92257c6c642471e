"""Celery workers on this machine, each with a `VEXPORT_HOME` of its own, as separate machines would have:
`make dev-cluster` starts them with the daemon and the UI (`python -m vexport_pipeline.defs.cluster`); the
two-worker test, and bench B10 on N workers, start them with `celery_workers` and run an export through them
with `execute_export`:

    with dg.instance_for_test() as instance, celery_workers(4, root), execute_export(instance, "x") as result:
        print(steps_by_worker(result))

A worker is `dagster-celery worker start` with the broker in its `-y` config file (written into its home),
one task at a time (`--concurrency 1`: one step per worker, as one encode per machine), listening on the
`cpu` queue, or on `gpu` and `cpu` for a worker with a hardware encoder. Its steps hand files to the others
through the artifact store (VEXPORT_ARTIFACTS): nothing is read from another worker's home.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from vexport_pipeline.core.settings import current
from vexport_pipeline.defs.placement import CPU, GPU

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass
class Worker:
    name: str  # Celery's node name is `<name>@<host>`
    home: Path
    process: subprocess.Popen
    log: Path

    def ready(self) -> bool:
        return self.log.exists() and " ready." in self.log.read_text(errors="replace")


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def start_worker(name: str, home: Path, queues: tuple[str, ...] = (CPU,)) -> Worker:
    """One worker process (in a session of its own, so that it and its pool stop together)."""
    broker = current().celery_broker
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster").mkdir(exist_ok=True)  # where dagster-celery keeps the worker's config module
    config = home / "celery.yaml"
    config.write_text(yaml.safe_dump({"execution": {"config": {"broker": broker, "backend": broker}}}))
    argv = [str(Path(sys.executable).with_name("dagster-celery")), "worker", "start", "-A", "dagster_celery.app"]
    argv += ["-y", str(config), "-n", name, *(a for q in queues for a in ("-q", q)), "--", "--concurrency", "1"]
    full_env = {**os.environ, "VEXPORT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    bin_dir = str(Path(sys.executable).parent)  # dagster-celery runs `celery` from the PATH: this environment's
    full_env["PATH"] = os.pathsep.join([bin_dir, full_env.get("PATH", "")])
    log = home / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Worker(name, home, proc, log)


def stop(workers: list[Worker]) -> None:
    """SIGTERM (Celery's warm shutdown: a running step finishes), then SIGKILL for what is left."""
    for w in workers:
        if w.process.poll() is None:
            os.killpg(w.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for w in workers:
        try:
            w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(w.process.pid, signal.SIGKILL)  # the pool's children too, whatever the leader did
        except ProcessLookupError:
            pass
        w.process.wait()


@contextmanager
def celery_workers(
    n: int, root: Path, *, queues: tuple[str, ...] = (CPU,), prefix: str = "w"
) -> Iterator[list[Worker]]:
    """`n` workers named `<prefix>1`... with homes `root/1` ... `root/n`, ready to take steps; all stopped on the
    way out."""
    workers: list[Worker] = []
    try:
        for i in range(1, n + 1):
            workers.append(start_worker(f"{prefix}{i}", Path(root) / str(i), queues))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(w.ready() for w in workers):
            dead = [w for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                w = (dead or workers)[0]
                tail = w.log.read_text(errors="replace")[-2000:] if w.log.exists() else ""
                raise RuntimeError(f"Celery worker {w.name} did not start:\n{tail}")
            time.sleep(0.2)
        yield workers
    finally:
        stop(workers)


def execute_export(instance, export_id: str, selection: list[str] | None = None):
    """Run `export_job` for one registered export with the executor VEXPORT_EXECUTOR names, as the daemon's run
    worker does: each worker reconstructs the job from the package. A context manager, as `dg.execute_job`."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    if not instance.has_dynamic_partition("exports", export_id):
        instance.add_dynamic_partitions("exports", [export_id])
    repo = ReconstructableRepository.for_module("vexport_pipeline.definitions", "defs", working_directory=None)
    return dg.execute_job(
        repo.get_reconstructable_job("export_job"),
        instance,
        tags={"dagster/partition": export_id},
        asset_selection=[dg.AssetKey(k) for k in selection] if selection else None,
    )


def steps_by_worker(result) -> dict[str, str]:
    """step key -> the Celery worker (`name@host`) that ran it, as dagster-celery recorded it."""
    out = {}
    for e in result.all_events:
        data = e.engine_event_data if e.is_engine_event else None
        if data and "Celery worker" in data.metadata:
            out[e.step_key] = data.metadata["Celery worker"].value
    return out


def main(argv: list[str] | None = None) -> int:
    """`make dev-cluster`: workers, then the daemon and the UI (`vexport dev`) until Ctrl-C."""
    import dagster as dg

    from vexport_pipeline.defs.instance import ensure_dagster_home

    parser = argparse.ArgumentParser(prog="python -m vexport_pipeline.defs.cluster")
    parser.add_argument("--workers", type=int, default=2, help="CPU workers")
    parser.add_argument("--gpu-workers", type=int, default=0, help="workers that also take hardware encodes")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    settings = current()
    if settings.executor != "celery" or not settings.artifacts:
        print("set VEXPORT_EXECUTOR=celery and VEXPORT_ARTIFACTS (make dev-cluster does)", file=sys.stderr)
        return 2
    if not redis_answers(settings.celery_broker):
        print(f"no Redis answers at {settings.celery_broker} (make dev-cluster starts one)", file=sys.stderr)
        return 1
    ensure_dagster_home()
    total = args.workers + args.gpu_workers
    with dg.DagsterInstance.get() as instance:  # the `gpu` pool (every encode) may use every worker
        instance.event_log_storage.set_concurrency_slots("gpu", total)
    root = settings.paths.root / "workers"
    with (
        celery_workers(args.workers, root) as cpu,
        celery_workers(args.gpu_workers, root / "gpu", queues=(GPU, CPU), prefix="gpu") as gpu,
    ):
        for w in [*cpu, *gpu]:
            print(f"worker {w.name}: home {w.home}, log {w.log}")
        dev = subprocess.Popen([str(Path(sys.executable).with_name("vexport")), "dev", "--port", str(args.port)])
        try:
            return dev.wait()
        except KeyboardInterrupt:  # Ctrl-C reached `vexport dev` too: it stops its webserver and daemon itself
            return dev.wait()


if __name__ == "__main__":
    sys.exit(main())
