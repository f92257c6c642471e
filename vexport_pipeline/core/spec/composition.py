"""The composition manifest (see CONTRACT.md): the pydantic models. Loading, the preset check and the
path policy are in `loading`.

Unknown keys are refused and every error names its field path, e.g.
`targets[2].resolution: '5k' is not one of 720p, 1080p, 1440p, 4k, 8k, WIDTHxHEIGHT or source`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from vexport_pipeline.core.timecode import fmt_clock, parse_fps, parse_time, parse_ttl

MAX_MANIFEST_BYTES = 1 << 20
MAX_LINK_TTL = 365 * 86400  # a year
MAX_DOWNLOADS = 1_000_000
MIN_SEGMENT_S = 0.1
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
RESOLUTIONS = {"720p": 720, "1080p": 1080, "1440p": 1440, "4k": 2160, "8k": 4320}
_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")

Time = Annotated[
    float,
    BeforeValidator(parse_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+:)?\d{1,2}:\d{1,2}(\.\d+)?$|^\d+(\.\d+)?$"},
            ]
        }
    ),
]
Ttl = Annotated[
    int,
    BeforeValidator(parse_ttl),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[smhdw]?$"}]}
    ),
]
Fps = Annotated[
    str,
    BeforeValidator(parse_fps),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}),
]


def _resolution(value: object) -> str:
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in RESOLUTIONS or text == "source":
        return text
    if text and (m := _SIZE.match(text)):
        w, h = int(m.group(1)), int(m.group(2))
        if not (16 <= w <= 16384 and 16 <= h <= 16384):
            raise ValueError(f"{value!r} is outside 16-16384 pixels per side")
        return f"{w}x{h}"
    raise ValueError(f"{value!r} is not one of 720p, 1080p, 1440p, 4k, 8k, WIDTHxHEIGHT or source")


Resolution = Annotated[
    str,
    BeforeValidator(_resolution),
    WithJsonSchema({"type": "string", "pattern": r"^(720p|1080p|1440p|4k|8k|source|\d{2,5}x\d{2,5})$"}),
]


def _bitrate(value: object) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    if isinstance(value, str) and (m := re.match(r"^(\d+(?:\.\d+)?)\s*([kKmM]?)$", value.strip())):
        return int(float(m.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()])
    raise ValueError(f"{value!r} is not a bitrate; use bits per second or e.g. 2500k, 8M")


Bitrate = Annotated[
    int,
    BeforeValidator(_bitrate),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+(\.\d+)?[kKmM]?$"}]}
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segment(_Strict):
    start: Time
    end: Time
    clip_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class Transitions(_Strict):
    crossfade: float = Field(
        default=0.0, ge=0, le=10, description="Crossfade in seconds between segments (combined only)."
    )


class Audio(_Strict):
    normalize: bool = False
    target_lufs: float = Field(default=-14.0, ge=-70, le=-5)
    true_peak: float = Field(default=-1.0, ge=-9, le=0)


class Target(_Strict):
    preset: str | None = None
    format: Literal["mp4", "mov", "webm"] | None = None
    video_codec: Literal["h264", "h265", "vp8", "vp9", "av1", "prores", "copy"] | None = None
    audio_codec: Literal["aac", "opus", "pcm", "copy", "none"] | None = None
    resolution: Resolution | None = None
    fps: Fps | None = None
    quality: Literal["draft", "low", "standard", "medium", "high", "master"] | None = None
    crf: int | None = Field(default=None, ge=0, le=63)
    vmaf: float | None = Field(
        default=None, ge=40, le=99, description="A VMAF target; the engine finds the setting that reaches it."
    )
    video_bitrate: Bitrate | None = None
    fit: Literal["pad", "crop", "blur"] | None = None
    profile: Literal["proxy", "lt", "standard", "hq", "4444", "4444xq"] | None = None


class Delivery(_Strict):
    destinations: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    link_ttl: Ttl = Field(default=86400, le=MAX_LINK_TTL, description="Seconds links stay valid; at most a year.")
    max_downloads: int | None = Field(default=None, ge=1, le=MAX_DOWNLOADS)
    allow_ips: list[str] = Field(default_factory=list)
    zip: bool = False

    @field_validator("allow_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
        return out


def _configured_destinations() -> set[str]:
    from vexport_pipeline.core.settings import destinations

    return set(destinations())


def _quality_mode(value: object) -> object:
    """YAML 1.1 reads an unquoted `off` (or `no`, `false`) as False: that means off."""
    return "off" if value is False else value


class Validation(_Strict):
    quality: Annotated[Literal["sampled", "full", "off"], BeforeValidator(_quality_mode)] = Field(
        default="sampled", description="VMAF/PSNR/SSIM on sampled frames, on every frame, or not at all."
    )
    playback: bool = Field(
        default=False, description="Also play every web rendition (H.264 MP4, VP8/VP9 WebM) in headless Chromium."
    )


class Retention(_Strict):
    archive_after: Ttl | None = None
    delete_after: Ttl | None = None
    legal_hold: bool = False


class Composition(_Strict):
    """One export: a source, the segments to keep and the targets to make."""

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    owner: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
    priority: int = Field(
        default=0,
        ge=-50,
        le=50,
        description="Queue priority, -50..50: higher runs first; never pre-empts running work.",
    )
    source: str = Field(min_length=1, max_length=4096)
    export_type: Literal["single", "combined", "clips"] = "combined"
    segments: list[Segment] | None = Field(default=None, min_length=1, max_length=100_000)
    transitions: Transitions | None = None
    snap_to_keyframes: bool = Field(
        default=False, description="Move cuts to the nearest keyframes so matching targets can be stream-copied."
    )
    audio: Audio | None = None
    targets: list[Target] = Field(min_length=1, max_length=64)
    delivery: Delivery = Field(default_factory=Delivery)
    retention: Retention | None = None
    validation: Validation = Field(default_factory=Validation)

    @property
    def crossfade(self) -> float:
        return self.transitions.crossfade if self.transitions else 0.0

    def problems(self) -> list[str]:
        """Cross-field checks pydantic cannot place on one field."""
        out: list[str] = []
        segs = self.segments or []
        if self.export_type == "single" and len(segs) > 1:
            out.append(
                f"segments: a single export takes one segment, got {len(segs)}; use export_type combined or clips"
            )
        for i, seg in enumerate(segs):
            if seg.start >= seg.end:
                out.append(f"segments[{i}]: start {fmt_clock(seg.start)} is not before end {fmt_clock(seg.end)}")
            elif seg.end - seg.start < MIN_SEGMENT_S:
                out.append(
                    f"segments[{i}]: {fmt_clock(seg.start)}-{fmt_clock(seg.end)} lasts"
                    f" {(seg.end - seg.start) * 1000:.0f} ms; a segment lasts at least {MIN_SEGMENT_S:g} s"
                )
        for i in range(1, len(segs)):
            prev, seg = segs[i - 1], segs[i]
            if seg.start < prev.end:
                out.append(
                    f"segments[{i}]: starts at {fmt_clock(seg.start)}, before segments[{i - 1}] ends at "
                    f"{fmt_clock(prev.end)}; segments must be in order and must not overlap"
                )
        ids = [s.clip_id.lower() for s in segs if s.clip_id]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            out.append(f"segments: clip_id {dup!r} is used more than once (ids are compared without case)")
        if self.crossfade:
            if self.export_type != "combined":
                out.append(f"transitions.crossfade: crossfades apply to combined exports only, not {self.export_type}")
            elif segs:
                shortest = min(s.end - s.start for s in segs)
                if len(segs) > 1 and self.crossfade >= shortest:
                    out.append(
                        f"transitions.crossfade: {self.crossfade} s is not shorter than the shortest segment"
                        f" ({shortest:.3f} s)"
                    )
        configured = _configured_destinations()
        for i, name in enumerate(self.delivery.destinations):
            if name not in configured:
                out.append(
                    f"delivery.destinations[{i}]: {name!r} is not a configured destination"
                    f" (configured: {', '.join(sorted(configured))}; see VEXPORT_DESTINATIONS)"
                )
            elif name in self.delivery.destinations[:i]:
                out.append(f"delivery.destinations[{i}]: {name!r} is listed twice")
        for i, t in enumerate(self.targets):
            if not (t.preset or t.format or t.video_codec):
                out.append(f"targets[{i}]: give a preset, or at least a format or video_codec")
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
