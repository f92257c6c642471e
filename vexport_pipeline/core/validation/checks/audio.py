"""Audio levels (EBU R128 measurement from the decoding pass): clipping, far too loud, and the
composition's (or brand's) loudness target and true-peak limit."""

from __future__ import annotations

from vexport_pipeline.core.validation.verdict import Issue

from .context import CheckContext


def levels(ctx: CheckContext) -> list[Issue]:
    found = ctx.analysis
    if found is None:
        return []
    out = []
    lufs, peak = found.integrated_lufs, found.true_peak_dbtp
    if peak is not None and peak > 0.0:
        out.append(
            ctx.error(
                "clipping",
                f"true peak {peak:+.1f} dBTP is over full scale: the audio clips",
                "normalize with a true-peak limit (audio.normalize)",
            )
        )
    elif lufs is not None and lufs > -9.0:
        out.append(
            ctx.warning(
                "too_loud",
                f"integrated loudness {lufs:.1f} LUFS is far above streaming levels (-14)",
                "normalize (audio.normalize, target_lufs -14)",
            )
        )
    if ctx.loudness_target and lufs is not None:
        target_i, target_tp = ctx.loudness_target
        if abs(lufs - target_i) > 1.0:
            out.append(
                ctx.error(
                    "loudness_target",
                    f"integrated loudness {lufs:.1f} LUFS, target {target_i} +-1 LU",
                    "re-run two-pass loudnorm",
                )
            )
        if peak is not None and peak > target_tp + 0.1:
            out.append(
                ctx.error(
                    "true_peak",
                    f"true peak {peak:+.1f} dBTP over the {target_tp} dBTP limit",
                    "lower the true-peak target or the gain",
                )
            )
    return out
