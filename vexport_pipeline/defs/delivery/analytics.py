import json

import dagster as dg
import pandas as pd

from vexport_pipeline.core.delivery.analytics import daily_rollup, owner_rollup
from vexport_pipeline.core.delivery.publish import SUMMARY
from vexport_pipeline.core.errors import VexportError
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs.resources import EventsResource, HomeResource, StoreResource


def delivered_renditions(home: HomeResource, store: StoreResource, export_ids: list[str]) -> pd.DataFrame:
    """One row per delivered file of each export: export_id, owner, preset (the target's name), rendition."""
    local, rows = store.get(), []
    for export_id in export_ids:
        try:
            owner = registry.load(home.paths, export_id).owner
        except VexportError:
            owner = ""
        v = local.current(export_id)
        data = local.read_record(v, SUMMARY) if v else None
        for r in json.loads(data).get("renditions", []) if data else []:
            name = (r.get("path") or r.get("uri") or "").rsplit("/", 1)[-1]
            rows.append({"export_id": export_id, "owner": owner, "preset": r.get("target", ""), "rendition": name})
    return pd.DataFrame(rows, columns=["export_id", "owner", "preset", "rendition"])


@dg.asset(
    group_name="analytics",
    kinds={"pandas"},
    description="Downloads of every export rolled up per day (kept in the event store), per owner and per preset.",
)
def analytics(home: HomeResource, store: StoreResource, events: EventsResource) -> dg.Output[pd.DataFrame]:
    event_store = events.get()
    requests = event_store.requests_frame()
    daily = daily_rollup(requests)
    kept = event_store.save_daily(daily)
    export_ids = sorted(set(event_store.links_frame()["export_id"]))
    rolled = owner_rollup(requests, delivered_renditions(home, store, export_ids))

    def table(df: pd.DataFrame) -> dg.MetadataValue:
        return dg.MetadataValue.md(md_table(list(df.columns), df.itertuples(index=False)))

    return dg.Output(
        rolled["owners"],
        metadata={
            "exports": len(export_ids),
            "daily_rows": kept,
            "downloads": int(daily["downloads"].sum()) if len(daily) else 0,
            "owners": table(rolled["owners"]),
            "presets": table(rolled["presets"]),
        },
    )
