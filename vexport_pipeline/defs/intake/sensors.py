import time
from pathlib import Path

import dagster as dg

from vexport_pipeline.core.intake import inbox, registry
from vexport_pipeline.core.settings import current
from vexport_pipeline.defs.jobs import EXPORT_TAG, export_job, run_tags
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import HomeResource

RETRY_WINDOW_S = 24 * 3600  # inbox records whose run is asked for again on every tick


@dg.sensor(
    job=export_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns compositions and bare videos dropped in VEXPORT_HOME/inbox into export partitions and runs.",
)
def composition_sensor(context: dg.SensorEvaluationContext, home: HomeResource) -> dg.SensorResult:
    accepted, rejected, held = inbox.process(
        home.paths,
        home.policy,
        min_age_s=current().inbox_min_age,
        busy=lambda eid: _busy(context.instance, eid),
        budget_s=current().inbox_tick_s,  # the rest wait for the next tick: Dagster fails a tick after 60 s,
        # and a short one keeps the daemon's other sensors and schedules on time
    )
    for r in rejected:
        context.log.warning(f"rejected {r.file}: {r.error}")
    waiting = sum(h.waiting for h in held)
    for h in held:
        if not h.waiting:
            context.log.info(f"left {h.file} in the inbox: {h.reason}")
    if waiting:
        context.log.info(f"{waiting} file(s) wait for the next tick: this one's {current().inbox_tick_s:g} s are spent")
    taken = {a.record.run_key for a in accepted}
    again = [r for r in registry.recent(home.paths, time.time() - RETRY_WINDOW_S) if r.run_key not in taken]
    records = [(a.record, a.file) for a in accepted] + [(r, Path(r.manifest or r.source_path).name) for r in again]
    if not records:
        return dg.SensorResult(skip_reason=_skip_reason(rejected, held))
    ids = sorted({record.export_id for record, _ in records})
    new_keys = [k for k in ids if not context.instance.has_dynamic_partition(exports.name, k)]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=record.run_key,  # Dagster launches each key once: asking again is safe
                partition_key=record.export_id,
                tags={**run_tags(record.composition), "vexport/file": file},
            )
            for record, file in records
        ],
        dynamic_partitions_requests=[exports.build_add_request(new_keys)] if new_keys else [],
    )


def _skip_reason(rejected: list[inbox.Rejected], held: list[inbox.Held]) -> str:
    reasons = [f"rejected {len(rejected)} file(s)"] if rejected else []
    if held:
        reasons.append(f"left {len(held)} file(s) in the inbox; {held[0].file}: {held[0].reason}")
    return "; ".join(reasons) or "inbox empty"


def _busy(instance: dg.DagsterInstance, export_id: str) -> str | None:
    """The run still queued or working on this export, if one is (a new file for it waits its turn)."""
    waiting = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    records = instance.get_run_records(dg.RunsFilter(tags={EXPORT_TAG: export_id}, statuses=waiting), limit=1)
    return (
        f"run {records[0].dagster_run.run_id[:8]} ({records[0].dagster_run.status.value.lower()})" if records else None
    )
