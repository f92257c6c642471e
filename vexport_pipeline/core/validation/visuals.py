"""The validation report a person reads: per rendition a contact sheet, a per-frame VMAF and
per-second bitrate plot (PNG), the issues with their fixes; and one pandas table of every check."""

from __future__ import annotations

import base64
from pathlib import Path

import av
import numpy as np
import pandas as pd

from vexport_pipeline.core.errors import ProcessingError
from vexport_pipeline.core.media.probe import SAFE_OPTIONS, seek_before

SHEET_TILES = 6


def contact_sheet(video: Path, out: Path, duration: float, width: int = 160, pad: int = 2) -> Path:
    """Six evenly spaced thumbnails in one row (PNG). Each is found by a seek and a decode from the keyframe before
    it, with one decoder: a long rendition is not decoded a second time after the checks' own pass (the sheet used
    to decode all of it). Renditions have square pixels and no rotation, so a frame is drawn as it is decoded."""
    try:
        with av.open(str(video), options=SAFE_OPTIONS) as c:
            stream = c.streams.video[0]
            height = max(2, round(stream.codec_context.height * width / stream.codec_context.width / 2) * 2)
            times = [max(duration, 0.1) * (k + 0.5) / SHEET_TILES for k in range(SHEET_TILES)]
            tiles = [
                f.to_ndarray(width=width, height=height, format="rgb24") for f in _frames_at(video, c, stream, times)
            ]
        sheet = np.zeros((height, SHEET_TILES * (width + pad) - pad, 3), np.uint8)
        for k, tile in enumerate(tiles):
            sheet[:, k * (width + pad) : k * (width + pad) + width] = tile
        encoder = av.CodecContext.create("png", "w")
        encoder.width, encoder.height, encoder.pix_fmt = sheet.shape[1], sheet.shape[0], "rgb24"
        frame = av.VideoFrame.from_ndarray(sheet, format="rgb24")
        out.write_bytes(b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)]))
    except (av.error.FFmpegError, OSError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise ProcessingError(f"contact sheet failed: {exc}", where=str(video), code="report_failed") from exc
    return out


def _frames_at(video: Path, c, stream, times: list[float]) -> list:
    """For each of `times` (seconds from the start, rising) the first frame at or after it, else the last there is,
    decoded from the keyframe before it (found by a seek that also holds where MPEG-TS seeks by timestamp)."""
    origin, last, out = (c.start_time or 0) / av.time_base, None, []
    for t in times:
        seek_before(c, stream, video, t)
        for frame in c.decode(stream):
            last = frame
            if frame.time is not None and frame.time - origin >= t:
                break
        if last is None:
            raise ValueError(f"no picture at {t:.2f} s")
        out.append(last)
    return out


def bitrate_per_second(video: Path) -> list[tuple[int, float]]:
    """Video bitrate (kb/s) of each whole second, from packet sizes (demux only)."""
    buckets: dict[int, int] = {}
    with av.open(str(video), options=SAFE_OPTIONS) as c:
        stream = c.streams.video[0]
        for p in c.demux(stream):
            if p.pts is not None and p.size:
                second = int(float(p.pts * stream.time_base))
                buckets[second] = buckets.get(second, 0) + p.size
    return [(s, b * 8 / 1000) for s, b in sorted(buckets.items())]


def plot(video: Path, out: Path, per_frame_vmaf: list | None, title: str) -> Path:
    # matplotlib's object API on the Agg canvas, not pyplot: no global figure state to close, and pyplot's own import
    # is not paid
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rates = bitrate_per_second(video)
    ax.bar([s + 0.5 for s, _ in rates], [r for _, r in rates], width=0.9, color="#c9d6e8", label="video kb/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("kb/s")
    if per_frame_vmaf:
        ax2 = ax.twinx()
        ax2.plot([t for t, _ in per_frame_vmaf], [v for _, v in per_frame_vmaf], color="#c0392b", label="VMAF")
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("VMAF")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    return out


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def checks_frame(reports: list[dict]) -> pd.DataFrame:
    """Every finding of every rendition, one row each (a passing rendition gets one 'pass' row)."""
    rows = []
    for r in reports:
        base = {"clip": r["clip_id"] or "-", "target": r["target"], "status": r["status"], "score": r["score"]}
        rows += [
            {**base, "severity": i["severity"], "code": i["code"], "message": i["message"], "hint": i["hint"]}
            for i in r["issues"]
        ] or [{**base, "severity": "pass", "code": "-", "message": "all checks passed", "hint": ""}]
    return pd.DataFrame(rows, columns=["clip", "target", "status", "score", "severity", "code", "message", "hint"])


def markdown(reports: list[dict], images: dict[str, tuple[Path, Path]]) -> str:
    out = []
    for r in reports:
        name = f"{r['clip_id'] + '/' if r['clip_id'] else ''}{r['target']}"
        m = r.get("measurements", {})
        q = m.get("quality") or {}
        facts = [
            f"**{r['status']}** (score {r['score']})",
            f"{m.get('width')}x{m.get('height')} {m.get('video_codec')} @ {m.get('fps')} fps",
            f"{m.get('size_bytes', 0) / 1e6:.2f} MB",
        ]
        if q:
            facts.append(
                f"VMAF {q['vmaf_mean']} (p5 {q['vmaf_p5']}, min {q['vmaf_min']}, {q['model']}),"
                f" PSNR {q['psnr_mean']} dB, "
                f"SSIM {q['ssim_mean']}"
            )
        if m.get("integrated_lufs") is not None:
            facts.append(f"{m['integrated_lufs']} LUFS, true peak {m.get('true_peak_dbtp')} dBTP")
        out.append(f"### {name}\n" + " · ".join(facts))
        if name in images:
            sheet, chart = images[name]
            out.append(f"![contact sheet]({data_uri(sheet)})\n\n![VMAF and bitrate]({data_uri(chart)})")
        if r["issues"]:
            out.append(
                "| severity | code | message | fix |\n|---|---|---|---|\n"
                + "\n".join(f"| {i['severity']} | {i['code']} | {i['message']} | {i['hint']} |" for i in r["issues"])
            )
    return "\n\n".join(out)
