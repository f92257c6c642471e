"""The summary JSON of the contract, built from the records each stage produced."""

from __future__ import annotations

import json

from vexport_pipeline.core.records import Checked, ExportSource, Rendition


def source_block(src: ExportSource) -> dict:
    info = src.probed or src.info  # the user's file, not a copy made to read it
    v, a = info.video, info.audio
    return {
        "uri": "file://" + str(src.source_path),
        "duration": info.duration,
        "width": v.display_width if v else None,
        "height": v.display_height if v else None,
        "fps": v.fps if v else None,
        "video_codec": v.codec if v else None,
        "audio_codec": a.codec if a else None,
        "has_audio": a is not None,
        "sha256": src.sha256,
    }


def validation_block(checked: Checked) -> dict:
    r = checked.report
    return {
        "status": r.status,
        "score": r.score,
        "issues": [{"severity": i.severity, "code": i.code, "message": i.message, "hint": i.hint} for i in r.issues],
        "vmaf": r.vmaf,
        "loudness_lufs": r.loudness_lufs,
        "av_offset_ms": r.av_offset_ms,
    }


def rendition_block(
    r: Rendition,
    checked: Checked | None = None,
    links: list | None = None,
    *,
    uri: str | None = None,
    path: str | None = None,
) -> dict:
    """One rendition as the contract lists it; `uri`/`path` say where the delivered copy is."""
    path = path or str(r.path)
    return {
        "target": r.target,
        "clip_id": r.clip_id,
        "uri": uri or "file://" + path,
        "path": path,
        "container": r.container,
        "video_codec": r.video_codec,
        "audio_codec": r.audio_codec,
        "width": r.width,
        "height": r.height,
        "fps": r.fps,
        "duration": r.duration,
        "size_bytes": r.size_bytes,
        "sha256": r.sha256,
        "validation": validation_block(checked) if checked is not None else None,
        "links": links or [],
    }


def build(
    export_id: str,
    status: str,
    *,
    source: dict | None = None,
    output_duration: float | None = None,
    renditions: list | None = None,
    bundles: list | None = None,
    errors: list | None = None,
) -> dict:
    return {
        "export_id": export_id,
        "status": status,
        "source": source,
        "output_duration": output_duration,
        "renditions": renditions or [],
        "bundles": bundles or [],
        "errors": errors or [],
    }


def dump_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
