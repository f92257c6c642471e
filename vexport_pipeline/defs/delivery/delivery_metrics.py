import base64

import dagster as dg
import pandas as pd

from vexport_pipeline.core.delivery.analytics import charts, export_metrics
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import EventsResource


def _img(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"pandas"},
    deps=["delivery"],
    description="Downloads per delivered rendition from the gateway's event store: counts, bytes, clients, charts.",
)
def delivery_metrics(context: dg.AssetExecutionContext, events: EventsResource) -> dg.Output[pd.DataFrame]:
    store = events.get()
    df = store.downloads_frame(context.partition_key)
    requests = store.requests_frame(context.partition_key)
    numbers = export_metrics(context.partition_key, requests, store.links_frame(context.partition_key))
    rows = [
        (r["name"], r["downloads"], r["requests"], f"{r['bytes_served']:,}", r["unique_clients"],
         r["completion_rate"] if r["completion_rate"] is not None else "-", r["last_download"] or "-")
        for r in numbers["renditions"]
    ]  # fmt: skip
    pictures = charts(requests, title=context.partition_key)
    totals = numbers["totals"]
    return dg.Output(
        df,
        metadata={
            "renditions": len(df),
            "downloads": int(totals["downloads"]),
            "requests": int(totals["requests"]),
            "bytes": int(totals["bytes_served"]),
            "unique_clients": int(totals["unique_clients"]),
            "table": dg.MetadataValue.md(
                md_table(["rendition", "downloads", "requests", "bytes", "clients", "completion", "last"], rows)
            ),
            "charts": dg.MetadataValue.md(
                _img(pictures["downloads_over_time"], "downloads over time")
                + "\n\n"
                + _img(pictures["by_country_device"], "by country and device")
            ),
            "countries": dg.MetadataValue.json(totals.get("countries", {})),
            "devices": dg.MetadataValue.json(totals.get("devices", {})),
        },
    )
