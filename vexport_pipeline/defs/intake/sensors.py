import dagster as dg

from vexport_pipeline.core.intake import inbox
from vexport_pipeline.core.settings import current
from vexport_pipeline.defs.jobs import EXPORT_TAG, export_job, run_tags
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import HomeResource


@dg.sensor(
    job=export_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns compositions and bare videos dropped in VEXPORT_HOME/inbox into export partitions and runs.",
)
def composition_sensor(context: dg.SensorEvaluationContext, home: HomeResource) -> dg.SensorResult:
    accepted, rejected = inbox.process(
        home.paths, home.policy, min_age_s=current().inbox_min_age, busy=lambda eid: _busy(context.instance, eid)
    )
    for r in rejected:
        context.log.warning(f"rejected {r.file}: {r.error}")
    if not accepted:
        return dg.SensorResult(skip_reason="inbox empty" if not rejected else f"rejected {len(rejected)} file(s)")
    ids = sorted({a.record.export_id for a in accepted})
    new_keys = [k for k in ids if not context.instance.has_dynamic_partition(exports.name, k)]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=a.record.run_key,
                partition_key=a.record.export_id,
                tags={**run_tags(a.record.export_id, a.record.owner), "vexport/file": a.file},
            )
            for a in accepted
        ],
        dynamic_partitions_requests=[exports.build_add_request(new_keys)] if new_keys else [],
    )


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
