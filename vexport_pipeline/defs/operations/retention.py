"""Retention and archive: the daily `retention` asset archives versions past `archive_after`, deletes those
past `delete_after` (revoking their links), never touches a legal hold, and cleans the work area and the
rendition cache. The work is `core.retention`; this module reports it as one materialization with counts
and bytes per action."""

import dagster as dg
import pandas as pd

from vexport_pipeline.core import retention as core
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs.resources import EventsResource, HomeResource, StoreResource

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
        (a.kind, a.export_id or "-", a.version or "-", a.destination, a.tier, a.bytes, f"{a.age_days:.1f}", a.reason)
        for a in (report.done if not report.dry_run else report.actions)
        if a.kind != "keep"
    ]
    header = ["action", "export", "version", "destination", "tier", "bytes", "age (d)", "reason"]
    meta["actions"] = dg.MetadataValue.md(md_table(header, rows) if rows else "Nothing to do.")
    if report.errors:
        meta["error_list"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in report.errors))
    return meta


@dg.asset(
    group_name="operations",
    description="Archives delivered versions past archive_after, deletes those past delete_after (links revoked, "
    "the summary kept as the record), never touches a legal hold, and cleans old work folders and cache files.",
)
def retention(
    context: dg.AssetExecutionContext, home: HomeResource, events: EventsResource, store: StoreResource
) -> dg.MaterializeResult:
    event_store = events.get()
    report = core.run(
        home.paths,
        revoke=lambda export_id, version: event_store.revoke(export_id=export_id, version=version),
        stores=core.object_stores(store.destinations()),  # S3 destinations: archive and delete by storage class
        artifacts=home.artifact_store(),  # the work files and shared cache that workers hand each other
    )
    for error in report.errors:
        context.log.warning(error)
    return dg.MaterializeResult(metadata=retention_metadata(report))


@dg.asset(
    group_name="operations",
    kinds={"pandas"},
    deps=[retention],
    description="Bytes the delivered versions hold per owner and tier (store, archive; per S3 destination too), "
    "after each retention run.",
)
def storage(home: HomeResource, store: StoreResource) -> dg.Output[pd.DataFrame]:
    usage = core.storage_usage(home.paths, core.object_stores(store.destinations()))
    df = pd.DataFrame([vars(u) for u in usage], columns=["owner", "tier", "exports", "versions", "bytes"])
    rows = [(u.owner, u.tier, u.exports, u.versions, f"{u.bytes:,}") for u in usage]
    table = md_table(["owner", "tier", "exports", "versions", "bytes"], rows) if rows else "Nothing stored."
    per_tier = {t: int(df.loc[df["tier"] == t, "bytes"].sum()) for t in ("store", "archive")}
    return dg.Output(
        df,
        metadata={
            "total_bytes": int(df["bytes"].sum()),
            **{f"{tier}_bytes": n for tier, n in per_tier.items()},
            "owners": int(df["owner"].nunique()),
            "table": dg.MetadataValue.md(table),
            "chart": dg.MetadataValue.md(_chart(df)),
        },
    )


def _chart(df: pd.DataFrame) -> str:
    """A bar per owner, the store and the archive stacked, as an inline PNG (the UI shows markdown images)."""
    import base64

    from vexport_pipeline.core.delivery.analytics import bar_png

    pivot = df.pivot_table(index="owner", columns="tier", values="bytes", aggfunc="sum", fill_value=0)
    png = bar_png({tier: (pivot[tier] / 1e6).to_dict() for tier in pivot.columns}, "MB stored per owner")
    return f"![storage per owner](data:image/png;base64,{base64.b64encode(png).decode()})"


retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.assets(retention, storage),
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
