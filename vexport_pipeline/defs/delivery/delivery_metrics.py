import dagster as dg
import pandas as pd

from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import EventsResource


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"pandas"},
    deps=["delivery"],
    description="Downloads per delivered rendition, from the event store (empty until downloads happen).",
)
def delivery_metrics(context: dg.AssetExecutionContext, events: EventsResource) -> dg.Output[pd.DataFrame]:
    df = events.get().downloads_frame(context.partition_key)
    rows = [
        (r.rendition, r.downloads, f"{r.bytes:,}", r.last_download if pd.notna(r.last_download) else None)
        for r in df.itertuples()
    ]
    return dg.Output(
        df,
        metadata={
            "renditions": len(df),
            "downloads": int(df["downloads"].sum()) if len(df) else 0,
            "bytes": int(df["bytes"].sum()) if len(df) else 0,
            "table": dg.MetadataValue.md(md_table(["rendition", "downloads", "bytes", "last download"], rows)),
        },
    )
