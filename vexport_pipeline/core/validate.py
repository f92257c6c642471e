"""Validation of a rendition against its target and platform limits: probe, full decode, verdict.

Score: 100, minus 30 for each error and 5 for each warning (never below 0). Status: fail with any
error, warn with any warning, else pass. Limits listed as uncertain only ever warn.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional

from .errors import InputError
from .presets import EncodeSettings
from .probe import MediaInfo, count_frames, probe
from .settings import ffmpeg_exe

CODEC_NAMES = {"h264": {"h264"}, "h265": {"hevc"}, "vp8": {"vp8"}, "vp9": {"vp9"}, "av1": {"av1"}, "prores": {"prores"}}
AUDIO_NAMES = {"aac": {"aac"}, "opus": {"opus"}, "pcm": {"pcm_s24le", "pcm_s16le"}}
# What a decoder reports for what we encode: ProRes 4444 decodes as 12-bit whatever it was fed.
DECODED_PIX_FMTS = {"yuva444p10le": {"yuva444p10le", "yuva444p12le", "yuv444p12le", "yuv444p10le"}}
CONTAINER_NAMES = {"mp4": "mp4", "mov": "mov", "webm": "webm"}
ERROR_WEIGHT, WARNING_WEIGHT = 30, 5


@dataclass
class Issue:
    severity: str  # error | warning
    code: str
    message: str
    hint: str = ""


@dataclass
class Report:
    status: str
    score: int
    issues: list[Issue]
    measurements: dict = field(default_factory=dict)
    vmaf: Optional[float] = None
    loudness_lufs: Optional[float] = None
    av_offset_ms: Optional[float] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["issues"] = [asdict(i) for i in self.issues]
        return d


def measure_loudness(path: Path) -> Optional[dict]:
    """EBU R128 integrated loudness (LUFS), loudness range (LU) and true peak (dBTP) of the first audio stream."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", f"file:{path}", "-map", "0:a:0",
                           "-filter:a", "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True, timeout=3600)
    summary = proc.stderr.rpartition("Summary:")[2]
    found = {k: re.search(rf"{k}:\s+(-?[\d.]+|-inf)", summary) for k in ("I", "LRA", "Peak")}
    if proc.returncode != 0 or not found["I"]:
        return None
    value = lambda k: float(found[k].group(1)) if found[k] and found[k].group(1) != "-inf" else None  # noqa: E731
    return {"integrated_lufs": value("I"), "lra_lu": value("LRA"), "true_peak_dbtp": value("Peak")}


def verdict(issues: list[Issue]) -> tuple[str, int]:
    errors = sum(i.severity == "error" for i in issues)
    warnings = sum(i.severity == "warning" for i in issues)
    score = max(0, 100 - ERROR_WEIGHT * errors - WARNING_WEIGHT * warnings)
    return ("fail" if errors else "warn" if warnings else "pass"), score


def check_file(
    path: Path,
    s: EncodeSettings,
    *,
    expected_duration: Optional[float] = None,
    source_has_audio: bool = False,
    decode: bool = True,
    info: Optional[MediaInfo] = None,
) -> Report:
    """Every check on one file; never raises for a bad file, it reports."""
    issues: list[Issue] = []

    def err(code, message, hint=""):
        issues.append(Issue("error", code, message, hint))

    def limit(key, code, message, hint=""):
        issues.append(Issue("warning" if key in s.uncertain else "error", code, message, hint))

    try:
        info = info or probe(path, where=str(path))
    except InputError as exc:
        err("unreadable", str(exc), "re-encode the rendition; the file cannot be opened")
        status, score = verdict(issues)
        return Report(status, score, issues)
    m: dict = {"size_bytes": info.size_bytes, "duration": info.duration, "format": info.format_name}
    if CONTAINER_NAMES[s.container] not in info.format_name.split(","):
        err("container_mismatch", f"container is {info.format_name}, expected {s.container}", f"remux into {s.container}")
    v = info.video
    if v is None:
        err("no_video", "the file has no video stream", "re-encode with a video stream mapped")
    else:
        m.update({"width": v.width, "height": v.height, "fps": v.fps, "pix_fmt": v.pix_fmt, "video_codec": v.codec})
        if v.codec not in CODEC_NAMES[s.video_codec]:
            err("codec_mismatch", f"video codec is {v.codec}, expected {s.video_codec}", f"re-encode with {s.encoder}")
        if (v.display_width, v.display_height) != (s.width, s.height):
            err("size_mismatch", f"picture is {v.display_width}x{v.display_height}, expected {s.width}x{s.height}",
                f"scale to {s.width}x{s.height}")
        if v.sar not in ("1", "0"):
            err("non_square_pixels", f"sample aspect ratio is {v.sar}, expected 1:1", "add setsar=1")
        if abs(float(v.rate) - float(Fraction(s.fps))) > 0.01 * float(Fraction(s.fps)):
            err("fps_mismatch", f"frame rate is {v.fps}, expected {float(Fraction(s.fps)):.3f}", f"re-encode with fps={s.fps}")
        if v.pix_fmt not in DECODED_PIX_FMTS.get(s.pix_fmt, {s.pix_fmt}):
            err("pix_fmt_mismatch", f"pixel format is {v.pix_fmt}, expected {s.pix_fmt}", f"re-encode with pix_fmt {s.pix_fmt}")
        if s.video_codec in ("h264", "h265", "vp8", "vp9", "av1") and (v.width % 2 or v.height % 2):
            err("odd_dimensions", f"{v.width}x{v.height} has an odd side; 4:2:0 needs even sizes", "scale to even dimensions")
    frame = 1.0 / float(Fraction(s.fps))
    video_duration = (v.duration if v and v.duration else info.duration) if v else info.duration
    m["video_duration"] = video_duration
    if expected_duration is not None and abs(video_duration - expected_duration) > frame + 1e-3:
        err("duration_mismatch", f"video lasts {video_duration:.3f} s, the timeline {expected_duration:.3f} s (more than one frame apart)",
            "re-render the clip; check cuts and transitions")
    a = info.audio
    if s.audio_codec and source_has_audio:
        if a is None:
            err("audio_missing", "the source has audio but the rendition has none", "map the audio stream")
        elif a.codec not in AUDIO_NAMES[s.audio_codec]:
            err("audio_codec_mismatch", f"audio codec is {a.codec}, expected {s.audio_codec}", f"re-encode audio with {s.audio_encoder}")
    if a is not None and v is not None:
        offset = round((a.start_time - v.start_time) * 1000, 1)
        m["av_offset_ms"] = offset
        if abs(offset) > 45:
            issues.append(Issue("warning", "av_offset", f"audio starts {offset:+.0f} ms from the video", "re-mux with aligned start times"))
    if s.container in ("mp4", "mov") and info.faststart is False:
        err("moov_at_end", "the moov atom comes after the media data; browsers must download it all first", "remux with -movflags +faststart")
    L = s.limits
    if (cap := L.get("max_file_bytes")) and info.size_bytes > cap:
        limit("max_file_bytes", "file_too_large", f"file is {info.size_bytes / 1e6:.1f} MB, over the {cap / 1e6:.0f} MB cap", "lower the quality tier or bitrate")
    if (lo := L.get("min_duration")) and info.duration < lo:
        limit("min_duration", "too_short", f"{info.duration:.2f} s is shorter than the {lo} s minimum", "use a longer segment")
    if (hi := L.get("max_duration")) and info.duration > hi:
        limit("max_duration", "too_long", f"{info.duration:.2f} s is longer than the {hi} s maximum", "cut it shorter or split into clips")
    if v is not None:
        if (lo := L.get("min_fps")) and v.fps < lo - 0.01:
            limit("min_fps", "fps_too_low", f"{v.fps} fps is below the platform minimum {lo}", f"set fps to at least {lo}")
        if (hi := L.get("max_fps")) and v.fps > hi + 0.01:
            limit("max_fps", "fps_too_high", f"{v.fps} fps is above the platform maximum {hi}", f"set fps to at most {hi}")
    loudness = measure_loudness(path) if a is not None else None
    if loudness:
        m.update(loudness)
    if decode and v is not None:
        frames, samples, errors = count_frames(path)
        m["decoded_frames"] = frames
        expected_frames = round(video_duration * float(Fraction(s.fps)))
        m["expected_frames"] = expected_frames
        if errors:
            err("decode_error", f"{len(errors)} decode error(s), first: {errors[0]}", "re-encode; the stream is damaged")
        if abs(frames - expected_frames) > 1:
            err("frame_count", f"decoded {frames} frames, expected {expected_frames}", "re-encode; the file is truncated or damaged")
    status, score = verdict(issues)
    return Report(status, score, issues, m, loudness_lufs=m.get("integrated_lufs"), av_offset_ms=m.get("av_offset_ms"))
