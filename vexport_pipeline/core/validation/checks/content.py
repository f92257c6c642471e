"""What the one decoding pass finds in the content: decode errors, missing frames, black stretches
and silences (with their times)."""

from __future__ import annotations

from fractions import Fraction

from vexport_pipeline.core.validation.verdict import Issue

from .context import CheckContext


def decoded(ctx: CheckContext) -> list[Issue]:
    found = ctx.analysis
    if found is None:
        return []
    ctx.measurements.update(
        {
            "decoded_frames": found.frames,
            "integrated_lufs": found.integrated_lufs,
            "lra_lu": found.lra_lu,
            "true_peak_dbtp": found.true_peak_dbtp,
            "black": found.black,
            "silence": found.silence,
        }
    )
    if ctx.v is None:
        return []
    out = []
    expected = round(ctx.video_duration * float(Fraction(ctx.s.fps)))
    ctx.measurements["expected_frames"] = expected
    if found.decode_errors:
        out.append(
            ctx.error(
                "decode_error",
                f"{len(found.decode_errors)} decode error(s), first: {found.decode_errors[0]}",
                "re-encode; the stream is damaged",
            )
        )
    if abs(found.frames - expected) > 1:
        out.append(
            ctx.error(
                "frame_count",
                f"decoded {found.frames} frames, expected {expected}",
                "re-encode; the file is truncated or damaged",
            )
        )
    return out


def black_and_silence(ctx: CheckContext) -> list[Issue]:
    found = ctx.analysis
    if found is None:
        return []
    out = [
        ctx.warning(
            "black_frames", f"black picture from {start:.2f} s to {end:.2f} s", "check the cut points and the source"
        )
        for start, end in found.black
    ]
    if ctx.a is not None and not ctx.s.silent_audio:
        for start, end in found.silence:
            stop = "the end" if end != end else f"{end:.2f} s"  # NaN: silent to the end
            out.append(
                ctx.warning(
                    "silence", f"silence from {start:.2f} s to {stop}", "check the audio mapping and the source"
                )
            )
    return out
