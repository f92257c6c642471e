import dagster as dg

from vexport_pipeline.core.delivery import summary
from vexport_pipeline.core.delivery.links import LinkPolicy, mint
from vexport_pipeline.core.delivery.publish import SUMMARY, Published, check_deliverable, publish_all, unchanged_version
from vexport_pipeline.core.delivery.stores import Store, Version
from vexport_pipeline.core.files import sha256_file
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.records import ExportSource, Rendition, ValidationOutcome
from vexport_pipeline.defs import progress
from vexport_pipeline.defs.failures import TRANSIENT_RETRIES, reported
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import EventsResource, HomeResource, LinksResource, StoreResource


def _where(store: Store, v: Version, name: str) -> dict:
    path = store.local_path(v, name)
    return {"uri": store.url(v, name), "path": str(path) if path else None}


def _copies(stores: dict[str, Store], done: Published, name: str, sha256: str | None) -> list[dict]:
    """Every delivered copy of one file: where it is and the checksum its store verified."""
    return [
        {
            "destination": dest,
            "uri": store.url(done.versions[dest], name),
            "checksum": done.checksums[dest].get(name) or (f"sha256:{sha256}" if sha256 else None),
        }
        for dest, store in stores.items()
    ]


def _deliver(stores: dict[str, Store], comp, renditions: list[Rendition], work) -> tuple[Published, bool]:
    """The files, committed whole to every destination; an unchanged re-export reuses what is there."""
    bundle = f"{comp.id}.zip" if comp.delivery.zip else None
    files = {r.delivered_name: r.sha256 for r in renditions}
    same = {dest: unchanged_version(store, comp.id, files, bundle) for dest, store in stores.items()}
    if all(same.values()):
        return Published(same, {dest: {} for dest in stores}), True
    paths = {r.delivered_name: r.path for r in renditions}
    return publish_all(stores, comp.id, paths, bundle=bundle, work=work), False


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"storage"},
    retry_policy=TRANSIENT_RETRIES,
    description="Validated files promoted atomically to every destination, then signed links and the summary.",
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
    comp = source.composition
    progress.publish(context, "delivering", "delivery")
    with reported():
        stores = {name: store.get(name) for name in comp.delivery.destinations}
        first = comp.delivery.destinations[0]  # links and the summary's uri/path name the first destination's copy
        target = stores[first]
        check_deliverable(target, comp.id, validation_report)
        renditions = validation_report.files(renditions)
        # the files first, committed whole; links and the summary only for versions that exist
        done, same = _deliver(stores, comp, renditions, home.paths.work / comp.id)
        v = done.versions[first]
        if same:
            context.log.info(f"unchanged: the files equal version {v.version}, which is reused (new links only)")
        event_store, signer = events.get(), links.signer()
        policy = LinkPolicy(comp.delivery.link_ttl, comp.delivery.max_downloads, tuple(comp.delivery.allow_ips))

        def link(name: str) -> list[dict]:
            where = _where(target, v, name)
            made = mint(event_store, signer, links.public_url, export_id=comp.id, version=v.version, rendition=name,
                        path=where["path"] or where["uri"], policy=policy, destination=first)  # fmt: skip
            return [made.to_dict()]

        blocks = []
        for r, c in zip(renditions, validation_report.renditions):
            block = summary.rendition_block(r, c, link(r.delivered_name), **_where(target, v, r.delivered_name))
            blocks.append({**block, "copies": _copies(stores, done, r.delivered_name, r.sha256)})
        bundles = []
        if comp.delivery.zip:
            name = f"{comp.id}.zip"
            path = target.local_path(v, name)
            size, sha = (path.stat().st_size, sha256_file(path)) if path else (None, None)
            bundles.append(
                {**_where(target, v, name), "size_bytes": size, "sha256": sha, "links": link(name),
                 "copies": _copies(stores, done, name, sha)}
            )  # fmt: skip
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
        for dest, s in stores.items():
            s.write_record(done.versions[dest], SUMMARY, summary.dump_json(data))
    progress.finish(context)
    folder = target.local_path(v, "")
    return dg.Output(
        data,
        metadata={
            "folder": dg.MetadataValue.path(str(folder)) if folder else target.url(v, ""),
            "version": v.version,
            "destinations": ", ".join(f"{d} ({done.versions[d].version})" for d in stores),
            "unchanged": bool(same),
            "files": len(renditions),
            "bundles": len(bundles),
            "total_bytes": sum(r.size_bytes for r in renditions),
            "link_ttl_s": comp.delivery.link_ttl,
        },
    )
