import dagster as dg

from vexport_pipeline.defs.jobs import metrics_job


@dg.schedule(
    job=metrics_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly rollup of download analytics for every delivered export, in one run.",
)
def metrics_rollup(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"analytics:{context.scheduled_execution_time:%Y%m%d%H}")
