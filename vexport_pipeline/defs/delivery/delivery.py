import dagster as dg

from vexport_pipeline.core.delivery import summary
from vexport_pipeline.core.delivery.stores import dump_json, write_zip
from vexport_pipeline.core.errors import ValidationFailed
from vexport_pipeline.core.media.render import sha256_file
from vexport_pipeline.core.spec.composition import parse_composition
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import VexportResource


def worse_than_delivered(current, reports: list) -> list[str]:
    """Renditions whose new validation score is lower than the one already delivered for them."""
    import json

    if current is None or not (current / "summary.json").exists():
        return []
    before = {
        (r["clip_id"], r["target"]): r["validation"]["score"]
        for r in json.loads((current / "summary.json").read_text())["renditions"]
        if r.get("validation")
    }
    return [
        f"{r['clip_id'] + '/' if r['clip_id'] else ''}{r['target']} would go from score {before[key]} to {r['score']}"
        for r in reports
        if (key := (r["clip_id"], r["target"])) in before and r["score"] < before[key]
    ]


def delivered_name(r: dict) -> str:
    ext = r["path"].rsplit(".", 1)[-1]
    return f"{r['clip_id']}__{r['target']}.{ext}" if r["clip_id"] else f"{r['target']}.{ext}"


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"storage"},
    description="Validated files promoted atomically to the delivery store, with the summary and signed links.",
)
def delivery(
    context: dg.AssetExecutionContext,
    vexport: VexportResource,
    source: dict,
    segments: dict,
    renditions: list,
    validation_report: dict,
) -> dg.Output[dict]:
    if validation_report["status"] == "fail":  # the blocking check already stops this; never promote a failure
        raise ValidationFailed("a rendition failed validation; nothing was delivered", where=context.partition_key)
    comp = parse_composition(source["composition"])
    worse = worse_than_delivered(vexport.store().current(comp.id), validation_report["renditions"])
    if worse:
        raise ValidationFailed(
            "a re-export must not replace a better delivered file: "
            + "; ".join(worse)
            + "; the delivered version stays",
            where=context.partition_key,
        )
    events, signer = vexport.events(), vexport.signer()
    files = {delivered_name(r): r["path"] for r in renditions}
    made: dict = {}

    def link(promoted, name: str) -> dict:
        return events.create_link(
            signer,
            export_id=comp.id,
            version=promoted.version,
            rendition=name,
            path=str(promoted.path(name)),
            ttl=comp.delivery.link_ttl,
            max_downloads=comp.delivery.max_downloads,
            allow_ips=comp.delivery.allow_ips,
            base_url=vexport.public_url.rstrip("/"),
        ).to_dict()

    def extras(promoted, staging):
        blocks = [
            summary.rendition_block(r, v, [link(promoted, delivered_name(r))], str(promoted.path(delivered_name(r))))
            for r, v in zip(renditions, validation_report["renditions"])
        ]
        bundles = []
        if comp.delivery.zip:
            name = f"{comp.id}.zip"
            write_zip(staging / name, {n: staging / n for n in files})
            bundles.append(
                {
                    "uri": "file://" + str(promoted.path(name)),
                    "path": str(promoted.path(name)),
                    "size_bytes": (staging / name).stat().st_size,
                    "sha256": sha256_file(staging / name),
                    "links": [link(promoted, name)],
                }
            )
        data = summary.build(
            comp.id,
            "delivered",
            source=summary.source_block(source["record"], source["info"], source["sha256"]),
            output_duration=segments["output_duration"],
            renditions=blocks,
            bundles=bundles,
        )
        made["summary"] = data
        (staging / "summary.json").write_bytes(dump_json(data))

    promoted = vexport.store().promote(comp.id, files, extras)
    data = made["summary"]
    return dg.Output(
        data,
        metadata={
            "folder": dg.MetadataValue.path(str(promoted.folder)),
            "version": promoted.version,
            "files": len(files),
            "bundles": len(data["bundles"]),
            "total_bytes": sum(r["size_bytes"] for r in renditions),
            "link_ttl_s": comp.delivery.link_ttl,
        },
    )
