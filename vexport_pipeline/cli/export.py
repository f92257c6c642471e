"""`vexport export`: the same Dagster assets, materialized in-process for one composition."""

from __future__ import annotations

from pathlib import Path

from vexport_pipeline.core.delivery import summary
from vexport_pipeline.core.errors import VexportError
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.media.probe import probe, require_video
from vexport_pipeline.core.media.timeline import check_segments
from vexport_pipeline.core.settings import Home, MediaPolicy
from vexport_pipeline.core.spec.composition import load_composition, resolve_source, slug
from vexport_pipeline.defs.instance import ensure_dagster_home

INPUT_ERRORS = {"InputError", "ManifestError"}


def prepare(manifest: Path) -> tuple[Home, dict]:
    """Everything that can refuse the input, before a partition exists or a byte is encoded."""
    home = Home.from_env().ensure()
    comp = load_composition(manifest)
    source = resolve_source(comp, manifest.resolve().parent, MediaPolicy.from_env(home))
    check_segments(comp, require_video(probe(source)))
    return home, registry.register(home, comp, source, manifest=manifest.resolve())


def _error_chain(error) -> list:
    out = []
    while error is not None:
        out.append(error)
        error = error.cause
    return out


def run_export(manifest: Path) -> tuple[dict, int]:
    """Returns (summary, exit code): 0 delivered, 2 refused input, 1 processing failed."""
    ensure_dagster_home()
    manifest = Path(manifest)
    try:
        home, record = prepare(manifest)
    except VexportError as exc:
        return summary.build(slug(manifest.stem), "refused", errors=[exc.as_dict()]), exc.exit_code

    import dagster as dg

    from vexport_pipeline.definitions import resources
    from vexport_pipeline.defs import export_assets
    from vexport_pipeline.defs.partitions import exports

    export_id = record["export_id"]
    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(exports.name, export_id):
        instance.add_dynamic_partitions(exports.name, [export_id])
    result = dg.materialize(
        export_assets,
        partition_key=export_id,
        instance=instance,
        resources=resources(),
        raise_on_error=False,
        tags={"vexport/source": "cli"},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    if _has_materialization(result, "delivery"):
        return result.output_for_node("delivery"), 0

    errors, code = [], 1
    for event in result.get_step_failure_events():
        chain = _error_chain(event.step_failure_data.error)
        refused = next((e for e in chain if e.cls_name in INPUT_ERRORS), None)
        code = 2 if refused else code
        cause = refused or chain[-1]  # the innermost error is the one our code raised
        errors.append(
            {
                "code": "input_refused" if refused else "step_failed",
                "message": f"{event.step_key}: {cause.message.strip()}",
            }
        )
    src = _maybe(result, "source")
    segs = _maybe(result, "segments")
    rends = _maybe(result, "renditions") or []
    report = _maybe(result, "validation_report")
    blocks = []
    for i, r in enumerate(rends):
        v = report["renditions"][i] if report else None
        blocks.append(summary.rendition_block(r, v, []))
    if report and report["status"] == "fail":
        failed = [
            f"{b['clip_id'] + '/' if b['clip_id'] else ''}{b['target']}"
            for b in blocks
            if b["validation"]["status"] == "fail"
        ]
        errors.append(
            {
                "code": "validation_failed",
                "message": f"validation failed for {', '.join(failed)}; nothing was delivered",
            }
        )
    data = summary.build(
        export_id,
        "refused" if code == 2 else "failed",
        source=summary.source_block(src["record"], src["info"], src["sha256"]) if src else None,
        output_duration=segs["output_duration"] if segs else None,
        renditions=blocks,
        errors=errors or [{"code": "failed", "message": "the run failed"}],
    )
    return data, code


def _has_materialization(result, name: str) -> bool:
    return any(e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key.path == [name] for e in result.all_events)


def _maybe(result, node: str):
    try:
        return result.output_for_node(node)
    except Exception:  # the step did not run or failed
        return None
