"""Export runs in the Dagster instance, for `vexport list`, `status`, `cancel` and `reexport`: the latest run of
each export (runs tagged `vexport/export`), its progress from the event log, stopping it however it was
started, and running a registered composition again in-process."""

from __future__ import annotations

import os
import signal
import socket
import time

import dagster as dg

from vexport_pipeline.core import history
from vexport_pipeline.core.delivery.stores import LocalStore
from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.settings import current
from vexport_pipeline.defs.jobs import EXPORT_TAG, HOST_TAG, OWNER_TAG, PID_TAG, alive, reap_dead_runs
from vexport_pipeline.defs.operations import runstore

CANCEL_WAIT_S = 10.0
ET = dg.DagsterEventType
KINDS = {
    ET.STEP_START: "start",
    ET.STEP_SUCCESS: "success",
    ET.STEP_FAILURE: "failure",
    ET.STEP_SKIPPED: "skipped",
    ET.STEP_OUTPUT: "output",
    ET.ASSET_OBSERVATION: "progress",
}


def _info(record) -> history.RunInfo:
    run = record.dagster_run
    return history.RunInfo(
        run.run_id,
        history.status_name(run.status.value),
        record.create_timestamp.timestamp() if record.create_timestamp else None,
        record.start_time,
        record.end_time,
        run.tags.get(OWNER_TAG),
        run.tags.get("vexport/source"),
    )


def latest_runs(instance: dg.DagsterInstance, export_id: str | None = None) -> dict[str, history.RunInfo]:
    """Export id → its newest run, from one query over the runs tagged `vexport/export`."""
    tags = {EXPORT_TAG: export_id} if export_id else None
    filters = dg.RunsFilter(tags=tags) if tags else dg.RunsFilter(job_name="export_job")
    out: dict[str, history.RunInfo] = {}
    for record in instance.get_run_records(filters=filters):  # newest first
        key = record.dagster_run.tags.get(EXPORT_TAG)
        if key and key not in out:
            out[key] = _info(record)
    return out


def delivered(export_id: str) -> tuple[str | None, str | None]:
    """(version, summary status) of the export's current version in the local store, or (None, None)."""
    return runstore.delivered(LocalStore(current().paths.store), export_id)


def list_rows(instance: dg.DagsterInstance) -> list[history.Row]:
    return runstore.rows(latest_runs(instance))


def step_events(instance: dg.DagsterInstance, run_id: str) -> list[history.StepEvent]:
    """The step events of a run that progress is computed from."""
    out = []
    for entry in instance.all_logs(run_id, of_type=set(KINDS)):
        event = entry.dagster_event
        if event is None:
            continue
        kind, pct, job = KINDS[event.event_type], None, None
        if kind == "output":
            job = event.event_specific_data.step_output_handle.mapping_key
        elif kind == "progress":
            meta = event.event_specific_data.asset_observation.metadata
            if "percent" not in meta:
                continue
            pct, job = float(meta["percent"].value), str(meta["job"].value) if "job" in meta else None
        out.append(history.StepEvent(kind, event.step_key, pct, job))
    return out


def planned_steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int:
    """Steps the run's plan holds, its mapped encode steps (`encode[?]`, `gpu_encode[?]`: the jobs are known only
    once planned) counted as one, as `history.progress` expects."""
    snap = (
        instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id) if run.execution_plan_snapshot_id else None
    )
    if snap is None:
        return 0
    keys = snap.step_keys_to_execute or [s.key for s in snap.steps]
    mapped = [k for k in keys if k.endswith("[?]")]
    return len(keys) - len(mapped) + (1 if mapped else 0)


def status(instance: dg.DagsterInstance, export_id: str) -> dict:
    """One JSON object: the export's latest run, its stage and percent, and the delivered summary."""
    runs = latest_runs(instance, export_id)
    version, _ = delivered(export_id)
    known = export_id in runs or version or (current().paths.registry / f"{export_id}.json").exists()
    if not known:
        raise InputError(f"no export {export_id!r} is known (no registered composition, run or delivery)")
    out: dict = {"export_id": export_id, "status": "registered", "run_id": None, "stage": None, "percent": 0.0}
    run = runs.get(export_id)
    if run:
        dagster_run = instance.get_run_by_id(run.run_id)
        prog = history.progress(step_events(instance, run.run_id), run.status, planned_steps(instance, dagster_run))
        elapsed = time.time() - run.started if run.status == "started" and run.started else 0.0
        out.update(
            status=run.status,
            run_id=run.run_id,
            stage=prog.stage,
            percent=prog.percent,
            steps_done=prog.steps_done,
            steps_total=prog.steps_total,
            running=prog.running,
            eta_s=history.eta(prog.percent, elapsed),
            created=run.created,
            started=run.started,
            ended=run.ended,
            source=run.source,
        )
    out["version"] = version
    store = LocalStore(current().paths.store)
    v = store.current(export_id)
    out["summary"] = runstore.summary(store, v) if v and (not run or run.status == "success") else None
    return out


def _wait_ended(instance: dg.DagsterInstance, run_id: str, timeout: float) -> dg.DagsterRun | None:
    deadline = time.monotonic() + timeout
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished or time.monotonic() >= deadline:
            return run
        time.sleep(0.2)


def _stop_cli_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """SIGTERM to the `vexport export` process: it interrupts its steps, FFmpeg dies with it and partial files
    are removed; the run was marked canceling first, so Dagster records it canceled, not failed."""
    import psutil

    pid = int(run.tags[PID_TAG])
    instance.report_run_canceling(run, message=f"vexport cancel: stopping process {pid}")
    try:
        proc = psutil.Process(pid)
        os.kill(pid, signal.SIGTERM)
    except (psutil.Error, ProcessLookupError):
        return f"process {pid} was already gone"
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:  # psutil's wait() sees a zombie its parent has not reaped as running
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.1)
    else:
        return f"process {pid} did not stop within {CANCEL_WAIT_S:.0f} s"
    return f"stopped process {pid}"


def cancel(instance: dg.DagsterInstance, export_id: str) -> tuple[str, int]:
    """Stop the export's queued or running run, however it was started. Returns (message, exit code):
    0 canceled, 2 no such export or nothing to cancel, 1 it could not be stopped."""
    reap_dead_runs(instance)
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
    active += [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    runs = instance.get_runs(filters=dg.RunsFilter(tags={EXPORT_TAG: export_id}, statuses=active))
    if not runs:
        if not latest_runs(instance, export_id) and not (current().paths.registry / f"{export_id}.json").exists():
            return f"no export {export_id!r} is known", 2
        return f"export {export_id!r} has no queued or running run", 2
    notes = []
    for run in runs:
        tags = run.tags
        if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            if not instance.run_coordinator.cancel_run(run.run_id):
                instance.report_run_canceled(run, message="canceled by vexport cancel")
            notes.append(f"{run.run_id[:8]} removed from the queue")
        elif tags.get("vexport/source") == "cli" and PID_TAG in tags:
            if tags.get(HOST_TAG) != socket.gethostname():
                notes.append(f"{run.run_id[:8]} runs on {tags.get(HOST_TAG)}: cancel it there")
                continue
            notes.append(f"{run.run_id[:8]} {_stop_cli_run(instance, run) if alive(tags) else 'process gone'}")
        else:
            instance.report_run_canceling(run, message="vexport cancel: terminating")
            instance.run_launcher.terminate(run.run_id)
            notes.append(f"{run.run_id[:8]} terminated")
        ended = _wait_ended(instance, run.run_id, CANCEL_WAIT_S)
        if ended is not None and not ended.is_finished:
            instance.report_run_canceled(ended, message="canceled by vexport cancel")
    final = [instance.get_run_by_id(r.run_id) for r in runs]
    ok = any(r is not None and r.status == dg.DagsterRunStatus.CANCELED for r in final)
    return f"export {export_id}: " + "; ".join(notes), 0 if ok else 1


def reprepare(export_id: str):
    """The registered composition of EXPORT_ID, checked again as `vexport export` checks a manifest (the source
    is still there, still allowed, still plannable) and registered anew."""
    from pathlib import Path

    from vexport_pipeline.core.intake import registry
    from vexport_pipeline.core.media.probe import probe, require_video
    from vexport_pipeline.core.planning import plan_checked
    from vexport_pipeline.core.spec.loading import resolve_source

    settings = current()
    home = settings.paths.ensure()
    old = registry.load(home, export_id)
    manifest = Path(old.manifest) if old.manifest else None
    base = manifest.parent if manifest else old.source_path.parent
    source = resolve_source(old.composition, base, settings.policy)
    plan_checked(old.composition, require_video(probe(source)))
    return registry.register(home, old.composition, source, manifest=manifest, via="cli", checked=True)
