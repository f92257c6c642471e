import dagster as dg

from vexport_pipeline.core.intake.registry import DEFAULT_OWNER

OWNER_TAG, EXPORT_TAG = "vexport/owner", "vexport/export"


def run_tags(export_id: str, owner: str | None) -> dict[str, str]:
    """The tags every export run carries, whoever launched it (per-owner limits key on the owner)."""
    return {EXPORT_TAG: export_id, OWNER_TAG: owner or DEFAULT_OWNER}


# Every stage of one export, in graph order (partitioned by `exports` through its assets).
export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.groups("export"),
    description="Run the whole asset graph for one export partition.",
)
metrics_job = dg.define_asset_job(
    "metrics_job", selection=dg.AssetSelection.assets("delivery_metrics"), description="Roll up download analytics."
)
