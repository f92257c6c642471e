"""Retention and archive: the daily `retention` asset archives versions past `archive_after`, deletes those
past `delete_after` (revoking their links), never touches a legal hold, and cleans the work area and the
rendition cache. The work is `core.retention`; this module reports it as one materialization with counts
and bytes per action."""

import dagster as dg

from vexport_pipeline.core import retention as core
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs.resources import EventsResource, HomeResource

LABELS = {  # metadata name -> action kind
    "archived": "archive",
    "deleted": "delete",
    "kept_on_hold": "hold",
    "kept": "keep",
    "work_cleaned": "clean_work",
    "cache_cleaned": "clean_cache",
}


def retention_metadata(report: core.Report) -> dict:
    """Counts and bytes per action, links revoked, errors, and a markdown table of what was done."""
    totals = report.totals()
    meta: dict = {}
    for label, kind in LABELS.items():
        meta[label] = totals[kind]["count"]
        meta[f"{label}_bytes"] = totals[kind]["bytes"]
    meta["revoked_links"] = report.revoked_links
    meta["errors"] = len(report.errors)
    rows = [
        (a.kind, a.export_id or "-", a.version or "-", a.tier, a.bytes, f"{a.age_days:.1f}", a.reason)
        for a in (report.done if not report.dry_run else report.actions)
        if a.kind != "keep"
    ]
    header = ["action", "export", "version", "tier", "bytes", "age (d)", "reason"]
    meta["actions"] = dg.MetadataValue.md(md_table(header, rows) if rows else "Nothing to do.")
    if report.errors:
        meta["error_list"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in report.errors))
    return meta


@dg.asset(
    group_name="operations",
    description="Archives delivered versions past archive_after, deletes those past delete_after (links revoked, "
    "the summary kept as the record), never touches a legal hold, and cleans old work folders and cache files.",
)
def retention(context: dg.AssetExecutionContext, home: HomeResource, events: EventsResource) -> dg.MaterializeResult:
    event_store = events.get()
    report = core.run(
        home.paths, revoke=lambda export_id, version: event_store.revoke(export_id=export_id, version=version)
    )
    for error in report.errors:
        context.log.warning(error)
    return dg.MaterializeResult(metadata=retention_metadata(report))


retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.assets(retention),
    description="Archive, delete and clean up per each export's retention, in one run.",
)


@dg.schedule(
    job=retention_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily retention: archive, delete (links revoked), clean the work area and the cache.",
)
def retention_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest(run_key=f"retention:{context.scheduled_execution_time:%Y%m%d}")
