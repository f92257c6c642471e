import dagster as dg
import pandas as pd

from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import VexportResource


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"pandas"},
    deps=["delivery"],
    description="Downloads per delivered rendition, from the event store (empty until downloads happen).",
)
def delivery_metrics(context: dg.AssetExecutionContext, vexport: VexportResource) -> dg.Output[pd.DataFrame]:
    df = vexport.events().downloads_frame(context.partition_key)
    rows = "\n".join(
        f"| {r.rendition} | {r.downloads} | {r.bytes:,} | {r.last_download if pd.notna(r.last_download) else '-'} |"
        for r in df.itertuples()
    )
    return dg.Output(
        df,
        metadata={
            "renditions": len(df),
            "downloads": int(df["downloads"].sum()) if len(df) else 0,
            "bytes": int(df["bytes"].sum()) if len(df) else 0,
            "table": dg.MetadataValue.md(
                "| rendition | downloads | bytes | last download |\n|---|---|---|---|\n" + rows
            ),
        },
    )
