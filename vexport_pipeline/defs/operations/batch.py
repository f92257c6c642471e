"""A batch's runs in the Dagster instance, for `vexport batch` and `vexport status --batch`: queueing one run per
admitted item (tagged `vexport/batch`), and reading the batch's runs back into its aggregate progress.

Runs are queued in the instance's run queue, as the UI and the sensor's run requests are, so the daemon launches
them under the fair queue (per-owner limits, `dagster/priority`, CPU/GPU kinds). Queueing a run needs a snapshot
of the job and an origin the daemon can resolve: the CLI loads the definitions in-process as a code location
named like workspace.yaml's, and the daemon launches each run through its own code server for that name."""

from __future__ import annotations

import sys
import time

import dagster as dg

from vexport_pipeline.core import batch, history
from vexport_pipeline.core.intake.registry import Registered
from vexport_pipeline.core.settings import Home
from vexport_pipeline.defs.failures import step_errors
from vexport_pipeline.defs.jobs import EXPORT_TAG, export_job, reap_dead_runs, run_tags
from vexport_pipeline.defs.operations.runs import latest_runs, planned_steps, step_events
from vexport_pipeline.defs.partitions import exports

BATCH_TAG, PARTITION_TAG = "vexport/batch", "dagster/partition"
LOCATION = "vexport"  # workspace.yaml's location_name: the daemon finds the code of a queued run by it
QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
DAEMON_FRESH_S = 120.0  # the daemon beats every 30 s: none for two minutes and it is not running


def has_queue(instance: dg.DagsterInstance) -> bool:
    return isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)


def daemon_running(instance: dg.DagsterInstance) -> bool:
    """Whether a daemon dequeues this instance's runs now (`make dev`, `dagster-daemon run`)."""
    beat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON)
    return beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S


def busy(instance: dg.DagsterInstance, export_id: str) -> str | None:
    """The run still queued or working on this export, if one is."""
    run = latest_runs(instance, export_id).get(export_id)
    return f"run {run.run_id[:8]} ({run.status})" if run and run.status in history.ACTIVE else None


def queue(instance: dg.DagsterInstance, batch_id: str, records: list[Registered]) -> dict[str, str]:
    """Queue one `export_job` run per record for the daemon. Returns export id → the error of each run that
    could not be queued (the others are queued)."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    new = [r.export_id for r in records if not instance.has_dynamic_partition(exports.name, r.export_id)]
    if new:
        instance.add_dynamic_partitions(exports.name, new)
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name="vexport_pipeline.definitions")
    failed: dict[str, str] = {}
    with InProcessCodeLocationOrigin(target, location_name=LOCATION).create_location(instance) as location:
        [repo] = location.get_repositories().values()
        job = repo.get_full_job(export_job.name)
        plan = location.get_execution_plan(job, {}, step_keys_to_execute=None, known_state=None, instance=instance)
        snapshot = plan.execution_plan_snapshot
        for record in records:
            tags = {**job.tags, **run_tags(record.composition), BATCH_TAG: batch_id, PARTITION_TAG: record.export_id}
            try:
                run = instance.create_run(
                    job_name=job.name,
                    run_id=None,
                    run_config={},
                    status=None,
                    tags=tags,
                    root_run_id=None,
                    parent_run_id=None,
                    step_keys_to_execute=snapshot.step_keys_to_execute,
                    execution_plan_snapshot=snapshot,
                    job_snapshot=job.job_snapshot,
                    parent_job_snapshot=job.parent_job_snapshot,
                    asset_selection=None,
                    asset_check_selection=None,
                    resolved_op_selection=None,
                    op_selection=None,
                    remote_job_origin=job.get_remote_origin(),
                    job_code_origin=job.get_python_origin(),
                    asset_graph=repo.asset_graph,
                )
                instance.submit_run(run.run_id, workspace=None)  # the queue only records it: the daemon launches
            except Exception as exc:  # one run that cannot be queued never stops the others
                failed[record.export_id] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return failed


def run_errors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dict]:
    """Why a run failed or ended early: its step failures, else the run's own failure message."""
    if run.status == dg.DagsterRunStatus.CANCELED:
        return [{"code": "canceled", "message": "the run was canceled"}]
    entries = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE})
    errors = step_errors([e.dagster_event for e in entries if e.dagster_event])
    if errors:
        return errors
    ended = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.RUN_FAILURE})
    message = ended[-1].dagster_event.message if ended and ended[-1].dagster_event else None
    return [{"code": "failed", "message": message or "the run failed"}]


def status(instance: dg.DagsterInstance, home: Home, batch_id: str) -> dict:
    """The batch's aggregate progress (`core.batch.aggregate`) from the newest run of each of its exports."""
    record = batch.read(home, batch_id)
    reap_dead_runs(instance)  # a `--wait` process that was killed leaves no run "started" forever
    runs: dict[str, batch.RunState] = {}
    for found in instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_TAG: batch_id})):  # newest first
        run = found.dagster_run
        export_id = run.tags.get(EXPORT_TAG)
        if not export_id or export_id in runs:
            continue
        state = history.status_name(run.status.value)
        prog = history.progress(step_events(instance, run.run_id), state, planned_steps(instance, run))
        errors = run_errors(instance, run) if state in batch.FAILED else []
        stage = None if state == "queued" else prog.stage
        runs[export_id] = batch.RunState(run.run_id, state, stage, prog.percent, errors)
    return batch.aggregate(record, runs)
