"""Targets and platform presets: a target (preset and/or explicit fields) resolves to concrete
encode settings for one source. Platform limits ride along for validation.

Limits marked uncertain in PLATFORMS.md are listed in `uncertain` and only ever warn.
Users add or override presets in a YAML file named by `VEXPORT_PRESETS`.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.media.probe import MediaInfo, VideoInfo
from vexport_pipeline.core.settings import current

from .composition import RESOLUTIONS, Target

MB = 1_000_000
GB = 1_000_000_000

BUILTIN_FILE = Path(__file__).with_name("presets.yaml")


@lru_cache(maxsize=1)
def builtin_presets() -> dict[str, dict[str, Any]]:
    """The built-in presets: data in presets.yaml beside this module."""
    return yaml.safe_load(BUILTIN_FILE.read_text())


# The promise of each tier: the mean VMAF (against the source as the encode saw it) the engine aims at.
# Calibrated on the sample corpus (bench/README.md); validation's floor is the target less VMAF_TOLERANCE.
TIER_VMAF: dict[str, float] = {
    "draft": 80.0,
    "low": 86.0,
    "standard": 91.0,
    "medium": 91.0,
    "high": 94.0,
    "master": 96.0,
}
VMAF_TOLERANCE = 2.0
# quality tier -> x264-scale CRF (where the search starts; what a render without a search uses), the
# old fixed cap at 1080p30 (kept for explicit CRFs), x264 speed preset
TIERS: dict[str, tuple[int, int, str]] = {
    "draft": (30, 2 * MB, "veryfast"),
    "low": (28, 2 * MB, "veryfast"),
    "standard": (21, 5 * MB, "fast"),
    "medium": (23, 4 * MB, "medium"),
    "high": (18, 8 * MB, "medium"),
    "master": (14, 15 * MB, "slow"),
}

CODECS = {
    # codec -> (encoder, containers it may go in)
    "h264": ("libx264", {"mp4", "mov"}),
    "h265": ("libx265", {"mp4", "mov"}),
    "vp8": ("libvpx", {"webm"}),
    "vp9": ("libvpx-vp9", {"webm", "mp4"}),
    "av1": ("libsvtav1", {"mp4", "webm"}),
    "prores": ("prores_ks", {"mov"}),
}
AUDIO = {"aac": ("aac", {"mp4", "mov"}), "opus": ("libopus", {"webm", "mp4"}), "pcm": ("pcm_s24le", {"mov"})}
DEFAULT_CODEC = {"mp4": "h264", "mov": "h264", "webm": "vp9"}
DEFAULT_FORMAT = {"vp8": "webm", "vp9": "webm", "prores": "mov"}
STANDARD_RATES = [
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
]
# H.264 levels: (name, max macroblocks per second, max frame size in macroblocks, max High-profile kbit/s)
H264_LEVELS = [
    ("3.0", 40500, 1620, 12500),
    ("3.1", 108000, 3600, 17500),
    ("3.2", 216000, 5120, 25000),
    ("4.0", 245760, 8192, 25000),
    ("4.1", 245760, 8192, 62500),
    ("4.2", 522240, 8704, 62500),
    ("5.0", 589824, 22080, 168750),
    ("5.1", 983040, 36864, 300000),
    ("5.2", 2073600, 36864, 300000),
    ("6.0", 4177920, 139264, 300000),
    ("6.1", 8355840, 139264, 300000),
    ("6.2", 16711680, 139264, 800000),
]


def h264_level(width: int, height: int, rate: Fraction, maxrate: int | None) -> str:
    """The lowest H.264 level whose frame size, macroblock rate and (High profile) bitrate fit."""
    frame_mbs = -(-width // 16) * -(-height // 16)
    mbps = frame_mbs * float(rate)
    kbps = (maxrate or 0) / 1000
    for name, max_mbps, max_fs, max_kbps in H264_LEVELS:
        if frame_mbs <= max_fs and mbps <= max_mbps and kbps <= max_kbps:
            return name
    return "6.2"


def h264_level_rate(width: int, height: int, rate: Fraction) -> int:
    """The peak bitrate (b/s) of the lowest H.264 level this size and rate need."""
    level = h264_level(width, height, rate, None)
    return next(kbps for name, _, _, kbps in H264_LEVELS if name == level) * 1000


def source_rate(video) -> Fraction:
    """A constant output rate for 'source': the source's own, or for VFR the nearest standard rate to its base rate."""
    if not video.vfr:
        return video.rate
    base = Fraction(video.base_fps) if video.base_fps else video.rate
    return min(STANDARD_RATES, key=lambda r: abs(float(r) - float(base)))


PRORES_PROFILES = {"proxy": 0, "lt": 1, "standard": 2, "hq": 3, "4444": 4, "4444xq": 5}


@dataclass(frozen=True)
class EncodeSettings:
    """Everything needed to write one rendition, resolved against the source."""

    label: str
    container: str
    video_codec: str
    encoder: str
    audio_codec: str | None
    audio_encoder: str | None
    width: int
    height: int
    fps: str  # exact rational as text
    fit: str
    pix_fmt: str
    quality: str
    crf: int | None
    video_bitrate: int | None
    maxrate: int | None
    bufsize: int | None
    gop: int
    speed: str | None
    profile: str | None
    level: str | None
    audio_bitrate: int | None
    sample_rate: int
    channels: int
    limits: dict = field(default_factory=dict)
    uncertain: tuple = ()
    notes: dict = field(default_factory=dict)  # limit -> the platform's own wording, quoted in reports
    silent_audio: bool = False  # add a silent track: the source has none and the platform requires audio
    crf_explicit: bool = False  # the user asked for a CRF: always encode, never stream-copy
    vmaf_target: float | None = None  # the VMAF the engine aims at (the tier's, or the target's `vmaf`)
    deinterlace: bool = False  # the source is interlaced: bwdif, field order from the stream
    tonemap: str | None = None  # the source is HDR ('pq' or 'hlg'): tone-mapped to SDR BT.709
    matrix: str = "bt709"  # the source's YUV matrix (swscale's name), converted to BT.709 when it is another
    primaries: str = "bt709"  # the source's primaries where wider (SDR BT.2020, P3), converted to BT.709's
    audio_track: int = 0  # which of the source's audio streams (the default one)
    repeatable: bool = False  # a chunk: the same bytes from any worker (no threads that race the rate control)

    @property
    def ext(self) -> str:
        return self.container

    @property
    def rate(self) -> Fraction:
        return Fraction(self.fps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["uncertain"] = list(self.uncertain)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncodeSettings:
        d = dict(d)
        d["uncertain"] = tuple(d.get("uncertain", ()))
        return cls(**d)


def even(n: float) -> int:
    return max(2, int(n / 2 + 0.5) * 2)  # nearest even, halves up


# What the encoders and their levels take (H.264/H.265 level 6.2: 8192x4320-class pictures).
MAX_SIDE, MAX_PIXELS = 8192, 8192 * 4352
# Explicit CRF per codec: x264's 0 is lossless and needs a 4:4:4 profile; SVT-AV1 starts at 1.
CRF_LIMITS = {"h264": (1, 51), "h265": (0, 51), "vp8": (4, 63), "vp9": (0, 63), "av1": (1, 63)}
MIN_VIDEO_BITRATE, MAX_VIDEO_BITRATE = 32_000, 400_000_000


def _range_problem(target: Target, f: dict, where: str) -> str | None:
    """Values the model takes but an encoder would refuse after work started, named by field."""
    vc, res = f["video_codec"], f.get("resolution") or "source"
    if "x" in res:
        w, h = (int(n) for n in res.split("x"))
        if w % 2 or h % 2:
            return (
                f"{where}.resolution: {res} has an odd side; encoders store colour per 2x2 pixels, so sizes must be"
                f" even (e.g. {w + w % 2}x{h + h % 2})"
            )
        if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
            return (
                f"{where}.resolution: {res} is larger than encoders and levels take (at most {MAX_SIDE} pixels"
                " a side, 8192x4352 in all)"
            )
    if target.crf is not None:
        if vc not in CRF_LIMITS:
            return f"{where}.crf: {vc} has no CRF; its profile sets the quality"
        lo, hi = CRF_LIMITS[vc]
        if not lo <= target.crf <= hi:
            return f"{where}.crf: {target.crf} is outside {vc}'s range {lo}-{hi}"
    if target.video_bitrate is not None:
        if vc == "prores":
            return f"{where}.video_bitrate: ProRes has no bitrate setting; its profile sets the bitrate"
        if not MIN_VIDEO_BITRATE <= target.video_bitrate <= MAX_VIDEO_BITRATE:
            return (
                f"{where}.video_bitrate: {target.video_bitrate} b/s is outside"
                f" {MIN_VIDEO_BITRATE // 1000} kb/s-{MAX_VIDEO_BITRATE // 1_000_000} Mb/s"
            )
    return None


def output_size(resolution: str, src_w: int, src_h: int) -> tuple[int, int]:
    """Named sizes set the short side and keep the source's aspect; WxH is exact; source keeps it."""
    if resolution == "source":
        return even(src_w), even(src_h)
    if resolution in RESOLUTIONS:
        short = RESOLUTIONS[resolution]
        if src_w >= src_h:
            return even(short * src_w / src_h), short
        return short, even(short * src_h / src_w)
    w, h = resolution.split("x")
    return even(int(w)), even(int(h))


class PresetBook:
    """The built-in presets plus the user's file (`VEXPORT_PRESETS`), which may add or override."""

    def __init__(self, presets: dict[str, dict[str, Any]]):
        self.presets = presets

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> PresetBook:
        """The built-ins, then the user's file: `path`, else `VEXPORT_PRESETS` (from the settings)."""
        presets = copy.deepcopy(builtin_presets())  # the cached data is never mutated
        path = path or current().presets_file
        if path:
            p = Path(path)
            for name, spec in _read_user_presets(p).items():
                presets[name] = _user_preset(name, spec, presets, where=str(p))
        return cls(presets)

    def names(self) -> list[str]:
        return sorted(self.presets)

    def get(self, name: str, where: str = "preset") -> dict[str, Any]:
        if name not in self.presets:
            guess = difflib.get_close_matches(name, self.presets, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else f"; known presets: {', '.join(self.names())}"
            raise InputError(f"{name!r} is not a known preset{hint}", where=where, code="preset_unknown")
        return self.presets[name]

    def merged(self, target: Target, where: str = "target") -> dict[str, Any]:
        """Preset fields, overridden by the fields given next to it."""
        base = dict(self.get(target.preset, f"{where}.preset")["target"]) if target.preset else {}
        given = target.model_dump(exclude_none=True, exclude={"preset"})
        fields = {**base, **given}
        # An explicit container change without a codec picks that container's default codec.
        if (
            "format" in given
            and "video_codec" not in given
            and fields.get("video_codec") not in codecs_for(fields["format"])
        ):
            fields["video_codec"] = DEFAULT_CODEC[fields["format"]]
        fields.setdefault("video_codec", DEFAULT_CODEC.get(fields.get("format", "mp4"), "h264"))
        fields.setdefault("format", DEFAULT_FORMAT.get(fields["video_codec"], "mp4"))
        if "audio_codec" not in fields or ("format" in given and "audio_codec" not in given):
            fields["audio_codec"] = (
                "pcm" if fields["video_codec"] == "prores" else ("opus" if fields["format"] == "webm" else "aac")
            )
        return fields

    def check_target(self, target: Target, where: str) -> str | None:
        """A problem with a target that needs no source: unknown preset, codec in the wrong container."""
        try:
            f = self.merged(target, where)
        except InputError as exc:
            return str(exc)
        vc, ac, fmt = f["video_codec"], f["audio_codec"], f["format"]
        if vc == "copy":
            return f"{where}.video_codec: 'copy' (stream copy) is not supported yet; pick a codec"
        if fmt not in CODECS[vc][1]:
            return f"{where}.video_codec: {vc} cannot go in {fmt}; use {' or '.join(sorted(CODECS[vc][1]))}"
        if ac not in ("none", "copy") and fmt not in AUDIO[ac][1]:
            return f"{where}.audio_codec: {ac} cannot go in {fmt}; use {' or '.join(sorted(AUDIO[ac][1]))}"
        if ac == "copy":
            return f"{where}.audio_codec: 'copy' is not supported yet; pick aac, opus, pcm or none"
        if f.get("profile") and vc != "prores":
            return f"{where}.profile: profiles apply to ProRes only, not {vc}"
        if target.crf is not None and target.video_bitrate is not None:
            return f"{where}: give crf or video_bitrate, not both"
        if target.vmaf is not None and (target.crf is not None or target.video_bitrate is not None):
            return f"{where}: give a vmaf target, or crf/video_bitrate, not both"
        if target.vmaf is not None and f["video_codec"] == "prores":
            return f"{where}.vmaf: ProRes has no quality target; its profile is the quality"
        return _range_problem(target, f, where)

    def resolve(self, target: Target, source: MediaInfo, where: str = "target") -> EncodeSettings:
        """The concrete settings of one target for this source: size, rate, rate control, audio."""
        if problem := self.check_target(target, where):
            raise InputError(problem, code="target_invalid")
        if source.video is None:
            raise InputError(f"{Path(source.path).name} has no video stream", where=where, code="media_no_video")
        f = self.merged(target, where)
        preset = self.presets.get(target.preset or "", {})
        limits = dict(preset.get("limits", {}))
        quality = f.get("quality", "medium")
        label = target.preset or "_".join(
            x for x in (f["format"], f["video_codec"], f.get("resolution", "source"), quality) if x
        )
        return EncodeSettings(
            label=label,
            container=f["format"],
            quality=quality,
            **_video_fields(f, quality, source.video, limits),
            **_audio_fields(f["audio_codec"], source, limits, youtube=(target.preset or "").startswith("youtube")),
            limits=limits,
            uncertain=tuple(preset.get("uncertain", ())),
            notes=dict(preset.get("notes", {})),
        )


def _read_user_presets(p: Path) -> dict:
    try:
        user = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read preset file: {exc}", where=str(p), code="presets_invalid") from None
    if not isinstance(user, dict):
        raise InputError("preset file must map preset names to settings", where=str(p), code="presets_invalid")
    return user


def _user_preset(name: str, spec: object, presets: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
    """A user preset over its `base` (or the preset of the same name): targets, limits and notes merge."""
    if not isinstance(spec, dict):
        raise InputError(f"{name}: expected a mapping", where=where, code="presets_invalid")
    base = presets.get(spec.get("base", name), {"target": {}, "limits": {}, "uncertain": []})
    target = {**base.get("target", {}), **spec.get("target", {})}
    try:
        Target.model_validate(target)
    except ValidationError as exc:
        raise InputError(f"{name}.target: {exc}", where=where, code="presets_invalid") from None
    return {
        "description": spec.get("description", base.get("description", "user preset")),
        "target": target,
        "limits": {**base.get("limits", {}), **spec.get("limits", {})},
        "uncertain": list(spec.get("uncertain", base.get("uncertain", []))),
        "notes": {**base.get("notes", {}), **spec.get("notes", {})},
    }


def _video_fields(f: dict, quality: str, video: VideoInfo, limits: dict) -> dict:
    """The picture half of EncodeSettings: codec, size, rate, pixel format and rate control."""
    vc = f["video_codec"]
    width, height = output_size(f.get("resolution", "source"), video.display_width, video.display_height)
    fps_text = f.get("fps", "source")
    rate = source_rate(video) if fps_text == "source" else Fraction(fps_text)
    rc = _rate_control(f, vc, quality, width, height, rate, limits)
    profile = f.get("profile") or ("hq" if vc == "prores" else None)
    if vc == "prores":
        pix_fmt = "yuva444p10le" if profile in ("4444", "4444xq") else "yuv422p10le"
    else:
        pix_fmt = "yuv420p"
    return {
        "video_codec": vc,
        "encoder": CODECS[vc][0],
        "width": width,
        "height": height,
        "fps": str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}",
        "fit": f.get("fit", "pad"),
        "pix_fmt": pix_fmt,
        **rc,
        # a one-second buffer under a VMAF target, so a platform cap holds even over short clips
        "bufsize": (1 if rc["vmaf_target"] else 2) * rc["maxrate"] if rc["maxrate"] else None,
        "gop": max(1, math.ceil(float(rate) * 2)),
        "profile": profile,
        "level": h264_level(width, height, rate, rc["maxrate"]) if vc == "h264" else None,
        "crf_explicit": f.get("crf") is not None,
        "deinterlace": video.interlaced,
        "tonemap": video.hdr,
        "matrix": video.matrix,
        "primaries": video.gamut,
    }


def _audio_fields(ac: str, source: MediaInfo, limits: dict, *, youtube: bool) -> dict:
    """The sound half: a silent track where the platform requires audio and the source has none."""
    silent = not source.has_audio and ac != "none" and bool(limits.get("requires_audio"))
    has_audio = (source.has_audio or silent) and ac != "none"
    return {
        "audio_codec": ac if has_audio else None,
        "audio_encoder": AUDIO[ac][0] if has_audio else None,
        "audio_bitrate": {"aac": 384_000 if youtube else 192_000, "opus": 128_000}.get(ac) if has_audio else None,
        "sample_rate": 48000,
        "channels": 2,
        "silent_audio": silent,
        "audio_track": source.audio_index,
    }


# Where the CRF search starts for each codec, as an offset from the tier's x264 CRF.
CRF_OFFSET = {"h265": 5, "vp9": 16, "vp8": 8, "av1": 12}


def _rate_control(f: dict, vc: str, quality: str, width: int, height: int, rate: Fraction, limits: dict) -> dict:
    """crf, video_bitrate, maxrate, speed and vmaf_target of a target.

    A tier or `vmaf` target aims at a VMAF (the CRF found by the search; this one is where it starts), capped
    only by the platform's rate limit and H.264's level. An explicit CRF keeps the tier's old rate cap; a
    bitrate encodes two-pass. ProRes has none of these: its profile is the quality."""
    tier_crf, tier_rate, speed = TIERS[quality]
    if vc == "prores":
        return {"crf": None, "video_bitrate": None, "maxrate": None, "speed": None, "vmaf_target": None}
    crf, bitrate = f.get("crf"), f.get("video_bitrate")
    if bitrate:
        return {
            "crf": None,
            "video_bitrate": bitrate,
            "maxrate": int(bitrate * 1.5),
            "speed": speed,
            "vmaf_target": None,
        }
    if crf is not None:
        scale = (width * height / (1920 * 1080)) ** 0.75 * (1.5 if rate > 31 else 1.0)
        return {
            "crf": crf,
            "video_bitrate": None,
            "maxrate": int(tier_rate * scale),
            "speed": speed,
            "vmaf_target": None,
        }
    maxrate = limits.get("max_video_bitrate")
    if vc == "h264":
        maxrate = min(maxrate or 10**12, h264_level_rate(width, height, rate))
    return {
        "crf": min(63, tier_crf + CRF_OFFSET.get(vc, 0)),
        "video_bitrate": None,
        "maxrate": maxrate,
        "speed": speed,
        "vmaf_target": float(f.get("vmaf") or TIER_VMAF[quality]),
    }


def codecs_for(fmt: str) -> set[str]:
    return {c for c, (_, fmts) in CODECS.items() if fmt in fmts}


def unique_labels(settings: list[EncodeSettings]) -> list[str]:
    """Labels usable as file names: a repeated label gets -2, -3..."""
    seen: dict[str, int] = {}
    out = []
    for s in settings:
        n = seen.get(s.label, 0) + 1
        seen[s.label] = n
        out.append(s.label if n == 1 else f"{s.label}-{n}")
    return out


def fit_size_cap(s: EncodeSettings, duration: float) -> EncodeSettings:
    """Under a platform's file-size cap, switch to a bitrate that lands below it (encoded two-pass).
    4% is kept back for the container and rate-control error."""
    cap = s.limits.get("max_file_bytes")
    if not cap or duration <= 0 or s.video_codec == "prores":
        return s
    video_budget = (cap * 0.96 * 8) / duration - (s.audio_bitrate or 0)
    if video_budget <= 50_000:
        raise InputError(
            f"{duration:.1f} s cannot fit under the {cap / 1e6:.1f} MB cap of {s.label}", where=s.label, code="size_cap"
        )
    planned = s.video_bitrate or s.maxrate
    if planned and planned <= video_budget:
        return s
    rate = int(video_budget * 0.95)
    return replace(s, video_bitrate=rate, maxrate=int(video_budget), bufsize=int(video_budget), crf=None)
