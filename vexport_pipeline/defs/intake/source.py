import os
from dataclasses import replace
from pathlib import Path

import dagster as dg

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.files import sha256_file
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.media.conform import conformed_copy
from vexport_pipeline.core.media.probe import probe, require_video
from vexport_pipeline.core.media.timeline import check_segments
from vexport_pipeline.core.planning import plan_checked, plan_export
from vexport_pipeline.core.records import ExportSource
from vexport_pipeline.defs import progress
from vexport_pipeline.defs.failures import reported
from vexport_pipeline.defs.jobs import run_tags
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import HomeResource


def _link_into(work: Path, source: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    dst = work / f"source{source.suffix.lower()}"
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    try:
        os.link(source, dst)
    except OSError:
        dst.symlink_to(source)
    return dst


def _tag_run(context: dg.AssetExecutionContext, tags: dict[str, str]) -> None:
    """Runs launched from the UI or a backfill carry the owner too: add what the launcher did not set."""
    missing = {k: v for k, v in tags.items() if context.run.tags.get(k) != v}
    if missing:
        context.instance.add_run_tags(context.run_id, missing)


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"video"},
    description="The export's source media, probed and checked against its composition.",
)
def source(context: dg.AssetExecutionContext, home: HomeResource) -> dg.Output[ExportSource]:
    with reported():
        paths = home.paths
        record = registry.load(paths, context.partition_key)
        comp = record.composition
        _tag_run(context, run_tags(comp))
        progress.publish(context, "planning", "source")
        if not record.source_path.is_file():
            raise InputError(f"{record.source_path} no longer exists", where="source", code="source_missing")
        info = require_video(probe(record.source_path))
        # refused here if sure to fail; the presets are read once: the resolved targets travel with the export
        plan = plan_export(comp, info) if record.checks_hold() else plan_checked(comp, info)
        work_source = _link_into(paths.work / comp.id, record.source_path)
        probed, copy = info, conformed_copy(info, check_segments(comp, info), paths.work / comp.id)
        if copy:  # read from here on: its sound keeps one format (core/media/conform.py)
            context.log.info(str(copy))
            work_source, info = Path(copy.info.path), require_video(copy.info)
            plan = plan_export(comp, info, offset=copy.offset)
        value = ExportSource(
            export_id=comp.id,
            owner=record.owner,
            composition=comp,
            targets=plan.targets,
            labels=plan.labels,
            # later steps read the work area's copy: it travels with the record to other workers (core/artifacts.py)
            info=replace(info, path=str(work_source)),
            source_path=record.source_path,
            work_source=work_source,
            sha256=sha256_file(record.source_path),
            manifest=record.manifest,
            probed=probed if copy else None,
            offset=copy.offset if copy else 0.0,
        )
    v = info.video
    return dg.Output(
        value,
        metadata={
            "path": dg.MetadataValue.path(str(record.source_path)),
            "owner": record.owner,
            "duration_s": info.duration,
            "resolution": f"{v.display_width}x{v.display_height}",
            "fps": v.fps,
            "video_codec": v.codec,
            "audio_codec": info.audio.codec if info.audio else "none",
            "size_bytes": info.size_bytes,
            "sha256": value.sha256,
            "targets": ", ".join(value.labels),
            **({"sound_changes": "; ".join(copy.changes())} if copy else {}),
        },
    )
