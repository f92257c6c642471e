"""The summary JSON of the contract, built from what each stage produced."""

from __future__ import annotations

RENDITION_KEYS = (
    "target",
    "clip_id",
    "uri",
    "path",
    "container",
    "video_codec",
    "audio_codec",
    "width",
    "height",
    "fps",
    "duration",
    "size_bytes",
    "sha256",
    "validation",
    "links",
)


def source_block(record: dict, info: dict, sha256: str) -> dict:
    v, a = info.get("video") or {}, info.get("audio") or {}
    return {
        "uri": "file://" + record["source_path"],
        "duration": info["duration"],
        "width": v.get("display_width"),
        "height": v.get("display_height"),
        "fps": v.get("fps"),
        "video_codec": v.get("codec"),
        "audio_codec": a.get("codec"),
        "has_audio": bool(a),
        "sha256": sha256,
    }


def rendition_block(
    r: dict, validation: dict | None = None, links: list | None = None, path: str | None = None
) -> dict:
    path = path or r["path"]
    out = {k: r.get(k) for k in RENDITION_KEYS}
    out.update({"path": path, "uri": "file://" + path, "links": links or []})
    if validation is not None:
        out["validation"] = {
            "status": validation["status"],
            "score": validation["score"],
            "issues": [
                {"severity": i["severity"], "code": i["code"], "message": i["message"], "hint": i.get("hint", "")}
                for i in validation["issues"]
            ],
            "vmaf": validation.get("vmaf"),
            "loudness_lufs": validation.get("loudness_lufs"),
            "av_offset_ms": validation.get("av_offset_ms"),
        }
    return out


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
