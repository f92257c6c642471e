"""A/V sync: the change from the source's own start offset, and the audio/video tail gap."""

from __future__ import annotations

from vexport_pipeline.core.validation.verdict import Issue

from .context import CheckContext


def av_sync(ctx: CheckContext) -> list[Issue]:
    v, a, lim = ctx.v, ctx.a, ctx.sync
    if a is None or v is None:
        return []
    out = []
    offset = round((v.start_time - a.start_time) * 1000, 1)  # positive: audio leads
    ctx.measurements["av_offset_ms"] = offset
    change = offset - ctx.source_av_offset_ms
    what = f"audio {'leads' if change > 0 else 'lags'} the video by {abs(change):.0f} ms more than in the source"
    # A constant-rate picture starts on its frame grid: a source offset between two frames moves by up to half a
    # frame (an MPEG-TS whose video starts 21 ms after its audio came out 40 ms after at 25 fps), so the limits
    # allow that much more.
    half = ctx.frame * 500
    if not lim.fail_lag_ms - half <= change <= lim.fail_lead_ms + half:
        out.append(
            ctx.error("av_sync", what, "re-render; check audio filters that reset the start time (aresample, loudnorm)")
        )
    elif not lim.warn_lag_ms - half <= change <= lim.warn_lead_ms + half:
        out.append(ctx.warning("av_sync", what, "check the sync by eye; re-render if it shows"))
    if a.duration and v.duration:
        gap = (a.start_time + a.duration) - (v.start_time + v.duration)
        ctx.measurements["av_tail_gap_ms"] = round(gap * 1000, 1)
        if abs(gap) > ctx.frame + 0.025:  # one frame plus one audio packet
            out.append(
                ctx.warning(
                    "av_tail_gap",
                    f"audio ends {gap * 1000:+.0f} ms from the video's end",
                    "pad or trim the audio to the video's length",
                )
            )
    return out
