import dagster as dg

from vexport_pipeline.defs.jobs import metrics_job
from vexport_pipeline.defs.partitions import exports


@dg.schedule(
    job=metrics_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly rollup of download analytics for every delivered export.",
)
def metrics_rollup(context: dg.ScheduleEvaluationContext):
    delivered = context.instance.get_materialized_partitions(dg.AssetKey("delivery"))
    keys = [k for k in context.instance.get_dynamic_partitions(exports.name) if k in delivered]
    if not keys:
        return dg.SkipReason("no delivered exports yet")
    return [
        dg.RunRequest(partition_key=k, run_key=f"metrics:{k}:{context.scheduled_execution_time:%Y%m%d%H}") for k in keys
    ]
