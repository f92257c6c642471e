import dagster as dg

from vexport_pipeline.core.delivery import summary
from vexport_pipeline.core.delivery.links import LinkPolicy, mint
from vexport_pipeline.core.delivery.publish import SUMMARY, check_deliverable, publish, unchanged_version
from vexport_pipeline.core.delivery.stores import Store, Version
from vexport_pipeline.core.files import sha256_file
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.records import ExportSource, Rendition, ValidationOutcome
from vexport_pipeline.defs.failures import reported
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import EventsResource, HomeResource, LinksResource, StoreResource


def _where(store: Store, v: Version, name: str) -> dict:
    path = store.local_path(v, name)
    return {"uri": store.url(v, name), "path": str(path) if path else None}


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"storage"},
    description="Validated files promoted atomically to the delivery store, then signed links and the summary.",
)
def delivery(
    context: dg.AssetExecutionContext,
    home: HomeResource,
    store: StoreResource,
    events: EventsResource,
    links: LinksResource,
    source: ExportSource,
    segments: Timeline,
    renditions: list[Rendition],
    validation_report: ValidationOutcome,
) -> dg.Output[dict]:
    comp, target = source.composition, store.get()
    with reported():
        check_deliverable(target, comp.id, validation_report)
        renditions = validation_report.files(renditions)
        files = {r.delivered_name: r.path for r in renditions}
        bundle = f"{comp.id}.zip" if comp.delivery.zip else None
        # the files first, committed whole; links and the summary only for a version that exists
        same = unchanged_version(target, comp.id, {r.delivered_name: r.sha256 for r in renditions}, bundle)
        v = same or publish(target, comp.id, files, bundle=bundle, work=home.paths.work / comp.id)
        if same:
            context.log.info(f"unchanged: the files equal version {same.version}, which is reused (new links only)")
        event_store, signer = events.get(), links.signer()
        policy = LinkPolicy(comp.delivery.link_ttl, comp.delivery.max_downloads, tuple(comp.delivery.allow_ips))

        def link(name: str) -> list[dict]:
            where = _where(target, v, name)
            made = mint(
                event_store,
                signer,
                links.public_url,
                export_id=comp.id,
                version=v.version,
                rendition=name,
                path=where["path"] or where["uri"],
                policy=policy,
            )
            return [made.to_dict()]

        blocks = [
            summary.rendition_block(r, c, link(r.delivered_name), **_where(target, v, r.delivered_name))
            for r, c in zip(renditions, validation_report.renditions)
        ]
        bundles = []
        if bundle:
            path = target.local_path(v, bundle)
            size, sha = (path.stat().st_size, sha256_file(path)) if path else (None, None)
            bundles.append({**_where(target, v, bundle), "size_bytes": size, "sha256": sha, "links": link(bundle)})
        data = summary.build(
            comp.id,
            "delivered",
            source=summary.source_block(source),
            output_duration=segments.output_duration,
            renditions=blocks,
            bundles=bundles,
        )
        if same:
            data["unchanged"] = True
        target.write_record(v, SUMMARY, summary.dump_json(data))
    folder = target.local_path(v, "")
    return dg.Output(
        data,
        metadata={
            "folder": dg.MetadataValue.path(str(folder)) if folder else target.url(v, ""),
            "version": v.version,
            "unchanged": bool(same),
            "files": len(files),
            "bundles": len(bundles),
            "total_bytes": sum(r.size_bytes for r in renditions),
            "link_ttl_s": comp.delivery.link_ttl,
        },
    )
