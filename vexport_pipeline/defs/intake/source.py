import os
from pathlib import Path

import dagster as dg

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.media.probe import probe, require_video
from vexport_pipeline.core.media.render import sha256_file
from vexport_pipeline.core.media.timeline import check_segments
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import VexportResource


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


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"video"},
    description="The export's source media, probed and checked against its composition.",
)
def source(context: dg.AssetExecutionContext, vexport: VexportResource) -> dg.Output[dict]:
    home = vexport.paths
    record, comp = registry.load(home, context.partition_key)
    path = Path(record["source_path"])
    if not path.is_file():
        raise InputError(f"{path} no longer exists", where="source", code="source_missing")
    info = require_video(probe(path))
    check_segments(comp, info)  # refuse segments outside the source before anything is encoded
    sha = sha256_file(path)
    kept = _link_into(home.work / comp.id, path)
    v = info.video
    value = {
        "export_id": comp.id,
        "record": record,
        "composition": record["composition"],
        "info": info.to_dict(),
        "sha256": sha,
        "work_source": str(kept),
    }
    return dg.Output(
        value,
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "duration_s": info.duration,
            "resolution": f"{v.display_width}x{v.display_height}",
            "fps": v.fps,
            "video_codec": v.codec,
            "audio_codec": info.audio.codec if info.audio else "none",
            "size_bytes": info.size_bytes,
            "sha256": sha,
        },
    )
