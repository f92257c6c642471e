"""The checks of one rendition, one module per family (`conformance`, `sync`, `platform`, `content`,
`audio`, `brand`, `quality`). Every check takes a `CheckContext` and returns the issues it found;
`check_file` runs them in order and turns the issues into a verdict. A bad file never raises: it is
reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.media.probe import MediaInfo, probe
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.spec.presets import EncodeSettings
from vexport_pipeline.core.validation.verdict import Issue, Report, SyncLimits, verdict

from . import audio, brand, conformance, content, platform, quality, sync
from .brand import load_brands
from .context import CheckContext

Check = Callable[[CheckContext], list[Issue]]

# In report order: the file's make-up, sync, delivery rules, the decoded content, brand, quality.
CHECKS: tuple[Check, ...] = (
    conformance.container,
    conformance.picture,
    conformance.duration,
    conformance.audio_stream,
    sync.av_sync,
    conformance.faststart,
    platform.file_limits,
    platform.picture_limits,
    platform.audio_limits,
    platform.rate_limits,
    conformance.bitstream,
    conformance.stream_layout,
    conformance.against_source,
    conformance.source_damage,
    conformance.source_shape,
    conformance.colour_tags,
    content.decoded,
    content.black_and_silence,
    audio.levels,
    brand.brand_rules,
    quality.tier_floor,
)


def check_file(
    path: Path,
    s: EncodeSettings,
    *,
    expected_duration: float | None = None,
    source_has_audio: bool = False,
    decode: bool = True,
    info: MediaInfo | None = None,
    source_av_offset_ms: float = 0.0,
    loudness_target: tuple[float, float] | None = None,
    sync: SyncLimits = SyncLimits(),
    reference: tuple[MediaInfo, Clip] | None = None,
    quality: str = "sampled",
    scored: dict | None = None,
    brand: dict | None = None,
) -> Report:
    """Every check on one file. `source_av_offset_ms` is the source's own offset (audio leads positive):
    sync is judged on the change. `loudness_target` (LUFS, dBTP) is checked to +-1 LU."""
    try:
        info = info or probe(path, where=str(path))
    except InputError as exc:
        issues = [Issue("error", "unreadable", str(exc), "re-encode the rendition; the file cannot be opened")]
        return Report(*verdict(issues), issues)
    ctx = CheckContext(
        path,
        s,
        info,
        expected_duration=expected_duration,
        source_has_audio=source_has_audio,
        decode=decode,
        source_av_offset_ms=source_av_offset_ms,
        loudness_target=loudness_target,
        sync=sync,
        reference=reference,
        quality=quality,
        scored=scored,
        brand=brand or {},
    )
    for check in CHECKS:
        ctx.issues += check(ctx)
    m = ctx.measurements
    return Report(
        *verdict(ctx.issues),
        ctx.issues,
        m,
        vmaf=ctx.vmaf,
        loudness_lufs=m.get("integrated_lufs"),
        av_offset_ms=m.get("av_offset_ms"),
    )


__all__ = ["CHECKS", "CheckContext", "Issue", "Report", "SyncLimits", "check_file", "load_brands", "verdict"]
