"""The closed loop: a rendition that validation measures under its quality floor is re-encoded alone,
with the CRF corrected from the measured VMAF, at most twice; the report lists every attempt. Where a
platform's hard limit (its bitrate cap, its file-size cap) makes the floor unreachable, the rendition
is delivered with a warning naming the limit and the best VMAF reached. A brand's `min_vmaf` stays
an error.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from vexport_pipeline.core.media.assembly import describe
from vexport_pipeline.core.media.render import partial_path, render_clip
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.media.tuning import CRF_RANGE, LOG_SLOPE, crf_towards
from vexport_pipeline.core.records import Checked, Encoded, ExportSource, Rendition
from vexport_pipeline.core.spec.presets import EncodeSettings
from vexport_pipeline.core.validation.verdict import Issue, verdict

MAX_RETRIES = 2
QUALITY_ERRORS = {"vmaf_below_tier", "brand_min_vmaf"}


def _quality_only(c: Checked) -> bool:
    errors = {i.code for i in c.report.issues if i.severity == "error"}
    return bool(errors) and errors <= QUALITY_ERRORS


def _capped_by(r: Rendition) -> str | None:
    """The platform limit that holds the rendition's bits down, if one does."""
    s = r.settings
    if s.video_bitrate and s.limits.get("max_file_bytes"):
        return f"the {s.limits['max_file_bytes'] / 1e6:.0f} MB file-size cap (max_file_bytes)"
    cap = s.limits.get("max_video_bitrate")
    if cap and r.size_bytes * 8 / max(r.duration, 1e-3) >= 0.85 * cap:
        return f"the {cap / 1e6:.3g} Mb/s bitrate cap (max_video_bitrate)"
    return None


def _next_crf(s: EncodeSettings, vmaf: float, want: float) -> int | None:
    """A lower CRF expected to reach `want` (at least one step lower), or None where there is none."""
    if s.crf is None:
        return None
    lo, _ = CRF_RANGE.get(s.video_codec, (0, 63))
    slope = LOG_SLOPE.get(s.video_codec, 0.1)
    crf = max(lo, s.crf - max(1, math.ceil(s.crf - crf_towards(s.video_codec, s.crf, vmaf, want, slope))))
    return crf if crf < s.crf else None


def _attempt(r: Rendition, c: Checked, note: str = "") -> dict:
    return {
        "crf": r.settings.crf,
        "size_bytes": r.size_bytes,
        "vmaf": c.report.vmaf,
        "status": c.status,
        **({"note": note} if note else {}),
    }


def improve(
    source: ExportSource, timeline: Timeline, r: Rendition, c: Checked, check, brand_min: float | None = None
) -> tuple[Rendition, Checked]:
    """Re-encode one rendition under its floor; `check(rendition) -> Checked` re-validates a file."""
    if not _quality_only(c) or c.report.vmaf is None:
        return r, c
    clip = next(k for k in timeline.clips if k.clip_id == r.clip_id)
    want = max(r.settings.vmaf_target or 0, brand_min or 0) or c.report.vmaf + 3
    attempts, best = [_attempt(r, c)], (r, c)
    for _ in range(MAX_RETRIES):
        cur_r, cur_c = best
        crf = _next_crf(cur_r.settings, cur_c.report.vmaf, want)
        if crf is None:
            attempts.append({"note": "no lower CRF to try (a bitrate or size target, or the codec's bound)"})
            break
        s = replace(cur_r.settings, crf=crf)
        tmp = partial_path(r.path).with_name(f".retry-{crf}-{r.path.name}")
        try:
            done = render_clip(source.info, clip, [s], [tmp], loudness=source.loudness)
            new_r = describe(
                source,
                clip,
                r.target,
                Encoded(0, tmp, False, False, done.encoders[0], s, done.wall_s, done.loudness),
                1,
            )
            new_c = check(new_r)
            attempts.append(_attempt(new_r, new_c))
            if (new_c.report.vmaf or 0) > (best[1].report.vmaf or 0):
                os.replace(tmp, r.path)
                best = (replace(new_r, path=r.path), new_c)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if best[1].status != "fail":
            break
    return _settle(best[0], best[1], attempts)


def _settle(r: Rendition, c: Checked, attempts: list[dict]) -> tuple[Rendition, Checked]:
    """Record the attempts; a tier floor a platform limit makes unreachable becomes a warning."""
    issues = list(c.report.issues)
    limit = _capped_by(r)
    if limit and any(i.code == "vmaf_below_tier" for i in issues):
        issues = [
            Issue(
                "warning",
                "vmaf_capped",
                f"best mean VMAF {c.report.vmaf} stays under the target "
                f"{r.settings.vmaf_target:g}: {limit} holds the bits down",
                "nothing to do within the platform's limits; export a higher-bitrate copy for other uses",
            )
            if i.code == "vmaf_below_tier"
            else i
            for i in issues
        ]
    status, score = verdict(issues)
    report = replace(
        c.report,
        issues=issues,
        status=status,
        score=score,
        measurements={**c.report.measurements, "attempts": attempts},
    )
    return r, replace(c, report=report, rendition=r)
