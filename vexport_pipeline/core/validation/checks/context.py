"""What every check reads: the file, its target, its probe, the one decoding pass, the reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path

from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.spec.presets import EncodeSettings
from vexport_pipeline.core.validation.analyze import Analysis, analyze
from vexport_pipeline.core.validation.verdict import Issue, SyncLimits


@dataclass
class CheckContext:
    path: Path
    s: EncodeSettings
    info: MediaInfo
    expected_duration: float | None = None
    source_has_audio: bool = False
    decode: bool = True
    source_av_offset_ms: float = 0.0
    loudness_target: tuple[float, float] | None = None  # (LUFS, dBTP), checked to +-1 LU
    sync: SyncLimits = SyncLimits()
    reference: tuple[MediaInfo, Clip] | None = None
    quality: str = "sampled"
    scored: dict | None = None  # the quality figures, when the clip's renditions were scored together
    brand: dict = field(default_factory=dict)
    measurements: dict = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)  # found so far, in check order
    vmaf: float | None = None

    @property
    def v(self):
        return self.info.video

    @property
    def a(self):
        return self.info.audio

    @property
    def frame(self) -> float:
        return 1.0 / float(Fraction(self.s.fps))

    @property
    def video_lead(self) -> float:
        """How long after the sound the picture starts (a source whose first picture comes after its sound keeps
        that gap, and the sync check holds the file to it): the part of the timeline with no frames."""
        v, a = self.v, self.a
        return max(0.0, v.start_time - a.start_time) if v and a else 0.0

    @property
    def video_duration(self) -> float:
        v = self.v
        return v.duration if v and v.duration else self.info.duration - self.video_lead

    @cached_property
    def analysis(self) -> Analysis | None:
        """The one full decoding pass (frames, decode errors, loudness, black, silence), if asked for."""
        if not self.decode:
            return None
        return analyze(self.path, has_video=self.v is not None, has_audio=self.a is not None)

    def error(self, code: str, message: str, hint: str = "") -> Issue:
        return Issue("error", code, message, hint)

    def warning(self, code: str, message: str, hint: str = "") -> Issue:
        return Issue("warning", code, message, hint)

    def limit(self, key: str, code: str, message: str, hint: str = "") -> Issue:
        """A platform limit: an error, or a warning where the limit is uncertain."""
        return Issue("warning" if key in self.s.uncertain else "error", code, message, hint)
