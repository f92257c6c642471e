"""A platform's limits from the preset (PLATFORMS.md): size, duration, edit lists, aspect, sides,
bitrate, audio format, frame rate. Firm limits fail; limits marked uncertain only warn."""

from __future__ import annotations

from vexport_pipeline.core.validation.verdict import Issue

from .context import CheckContext


def file_limits(ctx: CheckContext) -> list[Issue]:
    info, lim, out = ctx.info, ctx.s.limits, []
    if (cap := lim.get("max_file_bytes")) and info.size_bytes > cap:
        out.append(
            ctx.limit(
                "max_file_bytes",
                "file_too_large",
                f"file is {info.size_bytes / 1e6:.1f} MB, over the {cap / 1e6:.0f} MB cap",
                "lower the quality tier or bitrate",
            )
        )
    if (lo := lim.get("min_duration")) and info.duration < lo:
        out.append(
            ctx.limit(
                "min_duration",
                "too_short",
                f"{info.duration:.2f} s is shorter than the {lo} s minimum",
                "use a longer segment",
            )
        )
    if (hi := lim.get("max_duration")) and info.duration > hi:
        out.append(
            ctx.limit(
                "max_duration",
                "too_long",
                f"{info.duration:.2f} s is longer than the {hi} s maximum",
                "cut it shorter or split into clips",
            )
        )
    if lim.get("no_edit_list") and info.extra.get("edit_list"):
        why = ctx.s.notes.get("no_edit_list", "the platform asks for none")
        hint = "remux with -use_editlist 0 -movflags +negative_cts_offsets"
        out.append(ctx.limit("no_edit_list", "edit_list", f"the file carries an edit list ({why})", hint))
    return out


def picture_limits(ctx: CheckContext) -> list[Issue]:
    v, info, lim, out = ctx.v, ctx.info, ctx.s.limits, []
    if v is None:
        return out
    w, h = v.display_width, v.display_height
    if (lo := lim.get("min_aspect")) and w / h < lo - 1e-3:
        out.append(
            ctx.limit(
                "min_aspect",
                "aspect_out_of_range",
                f"aspect {w}:{h} is narrower than the platform's {lo:.3f}",
                "crop or pad to a supported aspect",
            )
        )
    if (hi := lim.get("max_aspect")) and w / h > hi + 1e-3:
        out.append(
            ctx.limit(
                "max_aspect",
                "aspect_out_of_range",
                f"aspect {w}:{h} is wider than the platform's {hi:.3f}",
                "crop or pad to a supported aspect",
            )
        )
    if (lo := lim.get("min_side")) and min(w, h) < lo:
        out.append(
            ctx.limit(
                "min_side",
                "too_small",
                f"{w}x{h} has a side under {lo} px",
                f"scale so both sides are at least {lo} px",
            )
        )
    if (hi := lim.get("max_side")) and max(w, h) > hi:
        out.append(
            ctx.limit("max_side", "too_big", f"{w}x{h} has a side over {hi} px", f"scale so no side is over {hi} px")
        )
    if (hi := lim.get("max_width")) and w > hi:
        out.append(
            ctx.limit(
                "max_width", "too_wide", f"{w} px wide, over the platform's {hi}", f"scale to at most {hi} px wide"
            )
        )
    a = ctx.a
    rate = v.bit_rate or (info.bit_rate - (a.bit_rate or 0) if info.bit_rate and a else info.bit_rate)
    if (cap := lim.get("max_video_bitrate")) and rate and rate > cap:
        out.append(
            ctx.limit(
                "max_video_bitrate",
                "bitrate_too_high",
                f"video at {rate / 1e6:.3g} Mb/s, over the {cap / 1e6:.3g} Mb/s cap",
                "lower the quality tier or set video_bitrate",
            )
        )
    return out


def audio_limits(ctx: CheckContext) -> list[Issue]:
    a, lim, out = ctx.a, ctx.s.limits, []
    if a is None:
        return out
    if (allowed := lim.get("audio_codecs")) and a.codec not in allowed:
        out.append(
            ctx.limit(
                "audio_codecs",
                "audio_codec_refused",
                f"audio codec {a.codec} is not accepted ({', '.join(allowed)})",
                f"re-encode the audio as {allowed[0]}",
            )
        )
    if (rates := lim.get("sample_rates")) and a.sample_rate not in rates:
        out.append(
            ctx.limit(
                "sample_rates",
                "sample_rate",
                f"audio at {a.sample_rate} Hz; the platform takes {', '.join(map(str, rates))}",
                f"resample to {rates[0]} Hz",
            )
        )
    if (hi := lim.get("max_sample_rate")) and a.sample_rate > hi:
        out.append(
            ctx.limit(
                "max_sample_rate", "sample_rate", f"audio at {a.sample_rate} Hz, over {hi}", f"resample to {hi} Hz"
            )
        )
    if (hi := lim.get("max_channels")) and a.channels > hi:
        out.append(
            ctx.limit("max_channels", "channels", f"{a.channels} audio channels, over {hi}", "downmix to stereo")
        )
    return out


def rate_limits(ctx: CheckContext) -> list[Issue]:
    v, lim, out = ctx.v, ctx.s.limits, []
    if v is None:
        return out
    if (lo := lim.get("min_fps")) and v.fps < lo - 0.01:
        out.append(
            ctx.limit(
                "min_fps", "fps_too_low", f"{v.fps} fps is below the platform minimum {lo}", f"set fps to at least {lo}"
            )
        )
    if (hi := lim.get("max_fps")) and v.fps > hi + 0.01:
        out.append(
            ctx.limit(
                "max_fps", "fps_too_high", f"{v.fps} fps is above the platform maximum {hi}", f"set fps to at most {hi}"
            )
        )
    return out
