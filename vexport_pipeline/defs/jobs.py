import dagster as dg

# Every stage of one export, in graph order (partitioned by `exports` through its assets).
export_job = dg.define_asset_job(
    "export_job",
    selection=dg.AssetSelection.groups("export"),
    description="Run the whole asset graph for one export partition.",
)
metrics_job = dg.define_asset_job(
    "metrics_job", selection=dg.AssetSelection.assets("delivery_metrics"), description="Roll up download analytics."
)
