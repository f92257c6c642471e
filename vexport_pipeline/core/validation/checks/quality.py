"""Objective quality against the source (VMAF, PSNR, SSIM) and the tier's floor."""

from __future__ import annotations

from vexport_pipeline.core.validation.verdict import Issue
from vexport_pipeline.core.validation.vmaf import floor, score

from .context import CheckContext


def tier_floor(ctx: CheckContext) -> list[Issue]:
    s = ctx.s
    unreadable = any(i.code in ("unreadable", "decode_error") for i in ctx.issues)
    if ctx.reference is None or ctx.quality == "off" or ctx.v is None or unreadable:
        return []
    source, clip = ctx.reference
    q = dict(ctx.scored) if ctx.scored else score(ctx.path, source, clip, s, full=ctx.quality == "full")
    ctx.measurements["per_frame_vmaf"] = q.pop("per_frame")
    ctx.measurements["quality"] = q
    ctx.vmaf = q["vmaf_mean"]
    out = []
    if (brand_min := ctx.brand.get("min_vmaf")) and ctx.vmaf < brand_min:
        out.append(
            ctx.error(
                "brand_min_vmaf",
                f"mean VMAF {ctx.vmaf} is under the brand's floor {brand_min}",
                "use a higher quality tier or a vmaf target above the brand's floor",
            )
        )
    least = floor(s)
    if least and ctx.vmaf < least:
        return out + [
            ctx.error(
                "vmaf_below_tier",
                f"mean VMAF {ctx.vmaf} ({q['model']}) is under {least:g}, the target {s.vmaf_target:g} less the"
                " tolerance",
                "use a lower CRF or a higher tier",
            )
        ]
    return out
