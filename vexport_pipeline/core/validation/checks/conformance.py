"""Technical conformance to the target: container, codecs, size, pixels, rate, duration, streams,
faststart, H.264 profile and level, constant frame rate."""

from __future__ import annotations

from fractions import Fraction

from vexport_pipeline.core.validation.analyze import frame_intervals
from vexport_pipeline.core.validation.verdict import Issue

from .context import CheckContext

CODEC_NAMES = {"h264": {"h264"}, "h265": {"hevc"}, "vp8": {"vp8"}, "vp9": {"vp9"}, "av1": {"av1"}, "prores": {"prores"}}
AUDIO_NAMES = {"aac": {"aac"}, "opus": {"opus"}, "pcm": {"pcm_s24le", "pcm_s16le"}}
# What a decoder reports for what we encode: ProRes 4444 decodes as 12-bit whatever it was fed.
DECODED_PIX_FMTS = {"yuva444p10le": {"yuva444p10le", "yuva444p12le", "yuv444p12le", "yuv444p10le"}}
CONTAINER_NAMES = {"mp4": "mp4", "mov": "mov", "webm": "webm"}


def container(ctx: CheckContext) -> list[Issue]:
    s, info = ctx.s, ctx.info
    ctx.measurements.update({"size_bytes": info.size_bytes, "duration": info.duration, "format": info.format_name})
    if CONTAINER_NAMES[s.container] not in info.format_name.split(","):
        return [
            ctx.error(
                "container_mismatch",
                f"container is {info.format_name}, expected {s.container}",
                f"remux into {s.container}",
            )
        ]
    return []


def picture(ctx: CheckContext) -> list[Issue]:
    s, v = ctx.s, ctx.v
    if v is None:
        return [ctx.error("no_video", "the file has no video stream", "re-encode with a video stream mapped")]
    ctx.measurements.update(
        {"width": v.width, "height": v.height, "fps": v.fps, "pix_fmt": v.pix_fmt, "video_codec": v.codec}
    )
    out = []
    if v.codec not in CODEC_NAMES[s.video_codec]:
        out.append(
            ctx.error(
                "codec_mismatch", f"video codec is {v.codec}, expected {s.video_codec}", f"re-encode with {s.encoder}"
            )
        )
    if (v.display_width, v.display_height) != (s.width, s.height):
        out.append(
            ctx.error(
                "size_mismatch",
                f"picture is {v.display_width}x{v.display_height}, expected {s.width}x{s.height}",
                f"scale to {s.width}x{s.height}",
            )
        )
    if v.sar not in ("1", "0"):
        out.append(ctx.error("non_square_pixels", f"sample aspect ratio is {v.sar}, expected 1:1", "add setsar=1"))
    rate = float(Fraction(s.fps))
    if abs(float(v.rate) - rate) > 0.01 * rate:
        out.append(
            ctx.error("fps_mismatch", f"frame rate is {v.fps}, expected {rate:.3f}", f"re-encode with fps={s.fps}")
        )
    if v.pix_fmt not in DECODED_PIX_FMTS.get(s.pix_fmt, {s.pix_fmt}):
        out.append(
            ctx.error(
                "pix_fmt_mismatch",
                f"pixel format is {v.pix_fmt}, expected {s.pix_fmt}",
                f"re-encode with pix_fmt {s.pix_fmt}",
            )
        )
    if s.video_codec in ("h264", "h265", "vp8", "vp9", "av1") and (v.width % 2 or v.height % 2):
        out.append(
            ctx.error(
                "odd_dimensions",
                f"{v.width}x{v.height} has an odd side; 4:2:0 needs even sizes",
                "scale to even dimensions",
            )
        )
    return out


def duration(ctx: CheckContext) -> list[Issue]:
    ctx.measurements["video_duration"] = got = ctx.video_duration
    want, lead = ctx.expected_duration, ctx.video_lead
    if want is not None and abs(lead + got - want) > ctx.frame + 1e-3:
        after = f" after a gap of {lead:.3f} s" if lead >= ctx.frame else ""
        return [
            ctx.error(
                "duration_mismatch",
                f"video lasts {got:.3f} s{after}, the timeline {want:.3f} s (more than one frame apart)",
                "re-render the clip; check cuts and transitions",
            )
        ]
    return []


def audio_stream(ctx: CheckContext) -> list[Issue]:
    s, a = ctx.s, ctx.a
    if not (s.audio_codec and ctx.source_has_audio):
        return []
    if a is None:
        return [ctx.error("audio_missing", "the source has audio but the rendition has none", "map the audio stream")]
    if a.codec not in AUDIO_NAMES[s.audio_codec]:
        return [
            ctx.error(
                "audio_codec_mismatch",
                f"audio codec is {a.codec}, expected {s.audio_codec}",
                f"re-encode audio with {s.audio_encoder}",
            )
        ]
    return []


def faststart(ctx: CheckContext) -> list[Issue]:
    if ctx.s.container in ("mp4", "mov") and ctx.info.faststart is False:
        return [
            ctx.error(
                "moov_at_end",
                "the moov atom comes after the media data; browsers must download it all first",
                "remux with -movflags +faststart",
            )
        ]
    return []


def bitstream(ctx: CheckContext) -> list[Issue]:
    """H.264 profile and level, evenly spaced timestamps."""
    s, v = ctx.s, ctx.v
    if v is None:
        return []
    out = []
    if s.video_codec == "h264" and s.pix_fmt == "yuv420p" and v.profile not in ("High", "Main", "Constrained Baseline"):
        out.append(
            ctx.error(
                "profile",
                f"H.264 profile is {v.profile}; players expect High (8-bit 4:2:0)",
                "re-encode with -profile:v high -pix_fmt yuv420p",
            )
        )
    if s.video_codec == "h264" and s.level and v.level and v.level > round(float(s.level) * 10):
        out.append(
            ctx.error(
                "level_too_high",
                f"H.264 level {v.level / 10:.1f} is above the {s.level} this size and "
                "rate need; some devices refuse it",
                f"re-encode with -level:v {s.level}",
            )
        )
    if len(frame_intervals(ctx.path)) > 1 and s.container != "webm":  # WebM timestamps are in ms: jitter is normal
        out.append(
            ctx.error(
                "variable_frame_rate",
                "frame timestamps are not evenly spaced (variable frame rate)",
                f"re-encode with fps={s.fps}",
            )
        )
    return out


def stream_layout(ctx: CheckContext) -> list[Issue]:
    s = ctx.s
    expected = 1 + bool(s.audio_codec and (ctx.source_has_audio or s.silent_audio))
    if ctx.info.stream_count != expected:
        want = "one video, one audio" if expected == 2 else "one video"
        return [
            ctx.error(
                "stream_layout",
                f"{ctx.info.stream_count} streams, expected {expected} ({want})",
                "map only the streams the target needs",
            )
        ]
    return []


def against_source(ctx: CheckContext) -> list[Issue]:
    """Allowed, but worth knowing: more pixels or frames than the source has (nothing is gained)."""
    if ctx.reference is None:
        return []
    from vexport_pipeline.core.planning import source_notes

    hint = "pick a resolution and rate the source has, unless the platform needs these"
    return [ctx.warning("beyond_source", note, hint) for note in source_notes(ctx.s, ctx.reference[0])]


def source_damage(ctx: CheckContext) -> list[Issue]:
    """The source's own damage in the clip: FFmpeg conceals it in the encode, so the file decodes cleanly and
    nothing else would say that a picture there may show blocks or smears."""
    if ctx.reference is None:
        return []
    from vexport_pipeline.core.media.probe import damaged_at
    from vexport_pipeline.core.timecode import fmt_clock

    info, clip = ctx.reference
    times = damaged_at(info.path, clip.ranges)
    if not times:
        return []
    spans = ", ".join(fmt_clock(t) for t in _runs(times))
    return [
        ctx.warning(
            "source_damaged",
            f"the source has damaged picture data at {spans} (source time; {len(times)} frame(s) the"
            " decoder could not read cleanly): the encode concealed it, and the pictures up to the next keyframe"
            " may show it",
            "look at those moments; export from an undamaged copy of the source if they show",
        )
    ]


def source_shape(ctx: CheckContext) -> list[Issue]:
    """A source whose picture changes aspect ratio mid-stream (an SD broadcast switching between 4:3 and 16:9 at
    the same 720x576): FFmpeg's filters keep the first part's shape, so the other part comes out squeezed or
    stretched, and nothing else would say so (a change of size alone is scaled to fit, and is fine)."""
    if ctx.reference is None:
        return []
    from vexport_pipeline.core.media.probe import picture_shapes
    from vexport_pipeline.core.timecode import fmt_clock

    info, clip = ctx.reference
    seen: list[tuple[float, Fraction]] = []
    for at, w, h, sar in picture_shapes(info.path, clip.ranges):
        aspect = Fraction(w) * Fraction(sar.replace(":", "/")) / h
        if not seen or abs(aspect / seen[-1][1] - 1) > 0.01:
            seen.append((at, aspect))
    if len(seen) < 2:
        return []
    changes = ", ".join(f"at {fmt_clock(at)} to {_ratio(a)}" for at, a in seen[1:6])
    changes += f" and {len(seen) - 6} more" if len(seen) > 6 else ""  # a damaged stream: the message stays short
    return [
        ctx.warning(
            "source_aspect_changes",
            f"the source's picture changes aspect ratio mid-stream ({_ratio(seen[0][1])}, then {changes}, source"
            " time): every part is shown at the first part's shape, so the parts after a change come out squeezed"
            " or stretched",
            "cut the composition at the change and export each part as its own clip",
        )
    ]


def _ratio(aspect: Fraction) -> str:
    """1.333 -> '4:3', 1.778 -> '16:9', else the number."""
    for w, h in ((4, 3), (16, 9), (1, 1), (9, 16), (21, 9)):
        if abs(aspect / Fraction(w, h) - 1) <= 0.01:
            return f"{w}:{h}"
    return f"{float(aspect):.3f}:1"


def _runs(times: tuple[float, ...], gap: float = 1.0) -> list[float]:
    """The first time of each run of damage (times less than `gap` apart are one run)."""
    return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] >= gap]


def colour_tags(ctx: CheckContext) -> list[Issue]:
    """SDR renditions are BT.709 and say so: untagged colour is guessed differently by every player."""
    v = ctx.v
    if v is None:
        return []
    tags = {"primaries": v.color_primaries, "transfer": v.color_trc, "matrix": v.color_space}
    ctx.measurements["colour"] = tags
    wrong = {k: t for k, t in tags.items() if t not in ("bt709", "unknown")}
    if wrong:
        return [
            ctx.error(
                "colour_mismatch",
                f"colour is tagged {wrong}, expected BT.709 for an SDR target",
                "tone-map to SDR BT.709 and tag the output",
            )
        ]
    if "unknown" in tags.values():
        missing = ", ".join(k for k, t in tags.items() if t == "unknown")
        return [
            ctx.warning(
                "colour_untagged",
                f"no colour tag for {missing}; players guess",
                "tag the output -color_primaries/-color_trc/-colorspace bt709",
            )
        ]
    return []
