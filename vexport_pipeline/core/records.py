"""The typed records the stages hand each other (`source` -> `segments` -> `renditions` ->
`validation_report` -> `delivery`). Frozen: a record is what a stage produced, not a place to keep
state. Each converts to and from plain JSON data for the summary, the UI and other processes.

The composition is parsed, and its targets resolved against the presets, once, at `source`; every
later stage reads them from `ExportSource`, so editing a preset file while a run is in flight does
not change the running export.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from vexport_pipeline.core.media.chunks import EncodeJob
from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.spec.composition import Composition
from vexport_pipeline.core.spec.presets import EncodeSettings
from vexport_pipeline.core.validation.verdict import Issue, Report


def label(clip_id: str | None, target: str) -> str:
    """How a rendition is named to people: `clip/target`, or `target` for a single timeline."""
    return f"{clip_id}/{target}" if clip_id else target


@dataclass(frozen=True)
class ExportSource:
    """What `source` produced: the composition as registered, its targets resolved, the probed media."""

    export_id: str
    owner: str
    composition: Composition
    targets: tuple[EncodeSettings, ...]  # one per composition target, presets resolved once
    labels: tuple[str, ...]  # the unique target names, in target order
    info: MediaInfo
    source_path: Path  # the registered source (under a media root)
    work_source: Path  # the same file linked into the export's work area
    sha256: str
    manifest: str | None = None
    probed: MediaInfo | None = None  # the source as probed, where `info` describes a copy whose sound was conformed
    offset: float = 0.0  # how much later than the source that copy starts (it lacks the source's earliest streams)

    @property
    def loudness(self) -> tuple[float, float] | None:
        """(target LUFS, true-peak dBTP) when the composition asks for normalization."""
        a = self.composition.audio
        return (a.target_lufs, a.true_peak) if a and a.normalize else None

    @property
    def av_offset_ms(self) -> float:
        """The source's own audio/video start offset (positive: audio leads); sync is judged on the change."""
        v, a = self.info.video, self.info.audio
        return (v.start_time - a.start_time) * 1000 if v and a else 0.0

    def to_dict(self) -> dict:
        return {
            "export_id": self.export_id,
            "owner": self.owner,
            "composition": self.composition.model_dump(mode="json", exclude_none=True),
            "targets": [s.to_dict() for s in self.targets],
            "labels": list(self.labels),
            "info": self.info.to_dict(),
            "source_path": str(self.source_path),
            "work_source": str(self.work_source),
            "sha256": self.sha256,
            "manifest": self.manifest,
            "probed": self.probed.to_dict() if self.probed else None,
            "offset": self.offset,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ExportSource:
        return cls(
            export_id=d["export_id"],
            owner=d["owner"],
            composition=Composition.model_validate(d["composition"]),
            targets=tuple(EncodeSettings.from_dict(s) for s in d["targets"]),
            labels=tuple(d["labels"]),
            info=MediaInfo.from_dict(d["info"]),
            source_path=Path(d["source_path"]),
            work_source=Path(d["work_source"]),
            sha256=d["sha256"],
            manifest=d.get("manifest"),
            probed=MediaInfo.from_dict(d["probed"]) if d.get("probed") else None,
            offset=d.get("offset", 0.0),
        )


@dataclass(frozen=True)
class Rendition:
    """One encoded file of the export, as `renditions` made and probed it."""

    target: str
    clip_id: str | None
    path: Path
    container: str
    video_codec: str
    audio_codec: str | None
    width: int
    height: int
    fps: float
    duration: float
    size_bytes: int
    sha256: str
    encoder: str
    wall_s: float
    cached: bool
    chunks: int
    expected_duration: float
    source_has_audio: bool
    settings: EncodeSettings
    loudness_pass1: dict | None = None

    @property
    def label(self) -> str:
        return label(self.clip_id, self.target)

    @property
    def delivered_name(self) -> str:
        """The file name in the delivery store: `clip__target.ext`."""
        ext = self.path.suffix
        return f"{self.clip_id}__{self.target}{ext}" if self.clip_id else f"{self.target}{ext}"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(path=str(self.path), settings=self.settings.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Rendition:
        return cls(**{**d, "path": Path(d["path"]), "settings": EncodeSettings.from_dict(d["settings"])})


@dataclass(frozen=True)
class Checked:
    """One rendition's validation report."""

    target: str
    clip_id: str | None
    report: Report
    rendition: Rendition | None = None  # the file as finally validated, where the closed loop re-encoded it

    @property
    def label(self) -> str:
        return label(self.clip_id, self.target)

    @property
    def status(self) -> str:
        return self.report.status

    def to_dict(self) -> dict:
        return {"target": self.target, "clip_id": self.clip_id, **self.report.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Checked:
        data = {k: v for k, v in d.items() if k not in ("target", "clip_id")}
        data["issues"] = [Issue(**i) for i in data["issues"]]
        return cls(d["target"], d["clip_id"], Report(**data))


@dataclass(frozen=True)
class ValidationOutcome:
    """What `validation_report` concluded for the whole export; `fail` blocks delivery."""

    status: str  # pass | warn | fail
    renditions: tuple[Checked, ...]

    @classmethod
    def of(cls, checked: list[Checked]) -> ValidationOutcome:
        statuses = {c.status for c in checked}
        status = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
        return cls(status, tuple(checked))

    def files(self, renditions: list[Rendition]) -> list[Rendition]:
        """The renditions as validated: a file the closed loop re-encoded replaces the one encoded first."""
        return [c.rendition or r for r, c in zip(renditions, self.renditions)]

    @property
    def failed(self) -> list[str]:
        return [c.label for c in self.renditions if c.status == "fail"]

    def to_dict(self) -> dict:
        return {"status": self.status, "renditions": [c.to_dict() for c in self.renditions]}

    @classmethod
    def from_dict(cls, d: dict) -> ValidationOutcome:
        return cls(d["status"], tuple(Checked.from_dict(c) for c in d["renditions"]))


@dataclass(frozen=True)
class EncodePlan:
    """Every target of the export as it will be encoded (hardware encoder chosen), and what was tried."""

    targets: tuple[EncodeSettings, ...]
    labels: tuple[str, ...]
    hardware: str
    tuning: tuple[dict, ...] = ()  # the CRF search per target: trials (crf, vmaf, kb/s) and the choice


@dataclass(frozen=True)
class EncodeTask:
    """One encode step: a whole clip, or one chunk of a long clip, for some of the plan's targets."""

    plan: EncodePlan
    job: EncodeJob


@dataclass(frozen=True)
class Encoded:
    """One target's output of an encode step (a finished file, or a chunk to be joined)."""

    target_index: int
    path: Path
    cached: bool
    copied: bool
    encoder: str
    settings: EncodeSettings  # as encoded (a size cap may have set a bitrate)
    wall_s: float  # the whole step's FFmpeg time
    loudness: dict | None = None


@dataclass(frozen=True)
class EncodeResult:
    task: EncodeTask
    outputs: tuple[Encoded, ...]
