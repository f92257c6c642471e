"""FFmpeg command building: plain data in, argv out. Pure: nothing here runs FFmpeg.

One process per clip: each source range is read once (input seeking), the ranges are joined
(concat, or xfade/acrossfade), and the joined picture is split to every target of the clip.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import ffmpeg

from vexport_pipeline.core.errors import EncodeError
from vexport_pipeline.core.spec.presets import PRORES_PROFILES, EncodeSettings

from . import graph
from .hardware import hardware_args
from .loudness import LoudnessPlan
from .probe import seek_point, video_track
from .timeline import Clip

# libvpx speed per tier (lower is slower and better); `good` deadline throughout.
VPX_CPU_USED = {
    "vp9": {"draft": 6, "low": 5, "standard": 4, "medium": 4, "high": 3, "master": 2},
    "vp8": {"draft": 5, "low": 4, "standard": 3, "medium": 3, "high": 2, "master": 1},
}
graph.install()  # ffmpeg-python's own graph sort is quadratic in the number of segments
GLOBAL_ARGS = ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1"]


def _num(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def _fit(stream, s: EncodeSettings, source_size: tuple[int, int] | None = None):
    w, h = s.width, s.height
    # The scale also brings the picture to BT.709 limited range: a BT.601 source (SD, DV, MJPEG cameras) tagged
    # BT.709 unconverted came out up to 30/255 off on saturated colours; a full-range one washed out or crushed.
    # HDR keeps its BT.2020 matrix for the tone mapping after this.
    colour = {} if s.tonemap else {"in_color_matrix": s.matrix, "out_color_matrix": "bt709", "out_range": "tv"}
    if source_size and abs(source_size[0] * h - source_size[1] * w) <= max(source_size):
        return stream.filter("scale", w, h, **colour)  # same aspect (within a pixel): no bars, nothing to crop
    if s.fit == "crop":
        return stream.filter("scale", w, h, force_original_aspect_ratio="increase", **colour).filter("crop", w, h)
    if s.fit == "blur":
        parts = stream.filter_multi_output("split", 2)
        bg, fg = parts[0], parts[1]
        radius = max(2, min(w, h) // 24)  # scales with the frame; stays inside boxblur's chroma limit
        bg = (
            bg.filter("scale", w, h, force_original_aspect_ratio="increase", **colour)
            .filter("crop", w, h)
            .filter("boxblur", luma_radius=radius, luma_power=2)
        )
        fg = fg.filter("scale", w, h, force_original_aspect_ratio="decrease", force_divisible_by=2, **colour)
        return ffmpeg.overlay(bg, fg, x="(W-w)/2", y="(H-h)/2")
    fitted = stream.filter("scale", w, h, force_original_aspect_ratio="decrease", force_divisible_by=2, **colour)
    return fitted.filter("pad", w, h, "(ow-iw)/2", "(oh-ih)/2")


def video_chain(stream, s: EncodeSettings, source_size: tuple[int, int] | None = None):
    """Deinterlace (bwdif, only frames coded as fields), constant frame rate (a VFR source comes out
    constant), scale/fit, HDR tone-mapped to SDR, wide-gamut SDR brought to BT.709 primaries, square pixels,
    pixel format, BT.709 tags on every frame."""
    if s.deinterlace:
        stream = stream.filter("bwdif", mode="send_frame", parity="auto", deint="interlaced")
    stream = _fit(stream.filter("fps", fps=s.fps), s, source_size)
    if s.tonemap:
        stream = _tonemap(stream, s.tonemap)
    elif s.primaries != "bt709":  # wide-gamut SDR: the fit made it BT.709 YUV; now its colours (in linear light)
        stream = stream.filter("zscale", pin=s.primaries, p="bt709", tin="bt709", t="bt709", min="bt709", m="bt709",
                               rin="tv", r="tv")  # fmt: skip
    return (
        stream.filter("setsar", "1")
        .filter("format", s.pix_fmt)
        .filter("setparams", color_primaries="bt709", color_trc="bt709", colorspace="bt709", range="tv")
    )


def _tonemap(stream, kind: str):
    """PQ or HLG, BT.2020 to SDR BT.709: to linear light, BT.709 primaries, Hable's curve, BT.709 transfer."""
    tin = "smpte2084" if kind == "pq" else "arib-std-b67"
    return (
        stream.filter("zscale", tin=tin, pin="bt2020", min="bt2020nc", t="linear", npl=100)
        .filter("format", "gbrpf32le")
        .filter("zscale", p="bt709")
        .filter("tonemap", tonemap="hable", desat=0)
        .filter("zscale", t="bt709", m="bt709", r="tv")
    )


def video_args(s: EncodeSettings) -> dict:
    """The encoder's options; a setting that is not set (no rate cap, say) is left out, not passed empty."""
    return {k: v for k, v in _video_args(s).items() if v is not None}


def _video_args(s: EncodeSettings) -> dict:
    a: dict = {"c:v": s.encoder, "pix_fmt": s.pix_fmt}
    if s.video_codec == "prores":
        a.update({"profile:v": str(PRORES_PROFILES[s.profile or "hq"]), "vendor": "apl0"})
        return a
    a["g"] = s.gop
    if s.encoder.endswith(("_nvenc", "_qsv")):
        a.update(hardware_args(s))
        if s.video_codec == "h265":
            a["tag:v"] = "hvc1"
        return a
    family = {"h264": _x26x_args, "h265": _x26x_args, "vp8": _vpx_args, "vp9": _vpx_args, "av1": _av1_args}
    if s.video_codec in family:
        a.update(family[s.video_codec](s))
    return a


def _x26x_args(s: EncodeSettings) -> dict:
    # x264 and x265 with frame threads and a rate cap (VBV) are not repeatable: the rate control reads the state
    # of frames still in flight, which depends on timing (measured: 8 encodes of one grainy 1080p clip under an
    # 8 Mb/s cap gave 8 different pictures; slice threads fixed that clip but not a 640x360 one, 7 of 8). A
    # `repeatable` encode (a chunk, which any worker may make) runs x264 on one thread (8 of 8 identical) and
    # x265 without frame threads: chunks get their parallelism from running on many workers, as Av1an's do.
    a: dict = {"preset": s.speed}
    if s.video_codec == "h264":
        a.update({"profile:v": "high", "level:v": s.level, "bf": 2})
        if s.repeatable:
            a["x264-params"] = "threads=1"
    else:
        a.update({"tag:v": "hvc1", "x265-params": "log-level=error" + (":frame-threads=1" if s.repeatable else "")})
    if s.video_bitrate:
        a.update({"b:v": s.video_bitrate, "maxrate": s.maxrate, "bufsize": s.bufsize})
    else:
        a.update({"crf": s.crf, "maxrate": s.maxrate, "bufsize": s.bufsize})
    return a


def _vpx_args(s: EncodeSettings) -> dict:
    # `good` deadline at every tier: `realtime` made rate control erratic (twice the bits for the same
    # picture with jittered timestamps). Speed comes from cpu-used, row-mt and tile columns instead.
    a: dict = {
        "deadline": "good",
        "cpu-used": VPX_CPU_USED[s.video_codec][s.quality],
        "auto-alt-ref": 1,
        "lag-in-frames": 16,
    }
    if s.video_codec == "vp9":
        a.update({"row-mt": 1, "tile-columns": 2 if s.width >= 1280 else 1, "frame-parallel": 0})
    if s.video_bitrate:
        a.update({"b:v": s.video_bitrate, "maxrate": s.maxrate, "bufsize": s.bufsize})
    elif s.video_codec == "vp9":  # constant quality, or constrained quality under a platform's rate cap
        a.update({"crf": s.crf, "b:v": s.maxrate or 0})
    else:  # VP8's constrained-quality mode follows b:v and hardly the CRF (measured: CRF 30 to 60 moved the size
        # 20 %), so the CRF is its finest quantizer instead: quality stops there and b:v, the platform cap or else a
        # ceiling of 0.3 bit a pixel (0 would mean 256 kb/s), only limits. Without a cap: constant quantizer.
        ceiling = s.maxrate or int(s.width * s.height * float(Fraction(s.fps)) * 0.3)
        a.update({"qmin": s.crf, "qmax": 63, "b:v": ceiling})
    return a


def _av1_args(s: EncodeSettings) -> dict:
    a: dict = {"preset": 10 if s.quality in ("draft", "low") else 8}
    if s.video_bitrate:
        a["b:v"] = s.video_bitrate
    else:
        a.update({"crf": s.crf})
    return a


def audio_args(s: EncodeSettings) -> dict:
    if not s.audio_encoder:
        return {}
    a: dict = {"c:a": s.audio_encoder, "ar": s.sample_rate, "ac": s.channels}
    if s.audio_bitrate:
        a["b:a"] = s.audio_bitrate
    return a


def container_args(s: EncodeSettings) -> dict:
    a: dict = {"map_metadata": -1, "map_chapters": -1}
    if s.container in ("mp4", "mov"):
        a["movflags"] = "+faststart"
        if s.limits.get("no_edit_list"):  # the platform forbids edit lists: negative CTS offsets keep the start at zero
            a.update({"movflags": "+faststart+negative_cts_offsets", "use_editlist": 0})
    return a


def _source_input(source: Path, start: float, end: float):
    """The source from `start` to `end`, its picture from the video stream `probe` describes (`.video`). In
    containers FFmpeg seeks by timestamp (MPEG-TS), read from just before the last keyframe at or before `start`
    and trim the pictures and sound up to `start` (`probe.seek_point`)."""
    at = seek_point(source, start)
    # file: prefix and a file-only protocol list: a source name can never become a URL. A picture that changes
    # size mid-stream (a broadcast recording across programmes, a browser's adaptive WebM) goes on through the
    # same filters, the scaler taking each size as it comes: rebuilt at the change, `setpts=PTS-STARTPTS` started
    # the second part at zero again and the fps filter dropped all of it (4 s came out as 2).
    inp = ffmpeg.input(
        f"file:{source}", ss=_num(at), t=_num(end - at), protocol_whitelist="file", **{"reinit_filter:v": 0}
    )
    return _Range(inp, start - at, video_track(source))


class _Range:
    """An input's streams for one range: the picture stream `track`, each starting `skip` seconds in."""

    def __init__(self, inp, skip: float, track: int):
        self.inp, self.skip, self.track = inp, skip, track

    @property
    def video(self):
        v = self.inp[f"v:{self.track}"]
        return v.filter("trim", start=_num(self.skip)) if self.skip > 0 else v

    def __getitem__(self, key: str):
        return self.inp[key].filter("atrim", start=_num(self.skip)) if self.skip > 0 else self.inp[key]


def _segment_video(inp, delay: float = 0.0):
    """Each segment starts at zero (after input seeking FFmpeg may start it a frame in); a stream that
    starts later than the cut in the source (a cut at the very start) keeps that gap, so sync holds."""
    return inp.video.filter("setpts", f"PTS-STARTPTS+{_num(delay)}/TB" if delay > 0 else "PTS-STARTPTS")


def _segment_audio(inp, start: float, end: float, source_has_audio: bool, delay: float = 0.0, track: int = 0):
    if source_has_audio:  # audio shorter than its segment is padded with silence, so later segments stay in sync
        a = inp[f"a:{track}"].filter("asetpts", "PTS-STARTPTS")
        if delay > 0:
            a = a.filter("adelay", f"{delay * 1000:.0f}", all=1)
        return a.filter("apad", whole_dur=_num(end - start)).filter("atrim", end=_num(end - start))
    return ffmpeg.input(f"anullsrc=r=48000:cl=stereo:d={_num(end - start)}", f="lavfi").audio  # a required silent track


def _joined_audio(auds: list, crossfade: float, loudness: LoudnessPlan | None = None, downmix: bool = False):
    if downmix:  # every target is stereo: a surround source is downmixed once, before loudness is measured or
        # applied, so what is normalized is what is delivered (downmixed per output, 5.1 came out 7 LU apart)
        auds = [a.filter("aformat", channel_layouts="stereo") for a in auds]
    if len(auds) == 1:
        a = auds[0]
    elif crossfade > 0:
        a = auds[0]
        for nxt in auds[1:]:
            a = ffmpeg.filter([a, nxt], "acrossfade", d=_num(crossfade))
    else:
        a = ffmpeg.concat(*auds, v=0, a=1)
    if loudness is not None:  # pass 2 of loudnorm; it resamples internally, so -ar is set per output
        a = a.filter("loudnorm", **loudness.filter_args())
    return a


def clip_audio(source: Path, clip: Clip, source_has_audio: bool = True, downmix: bool = False, track: int = 0):
    """The clip's joined audio alone, as FFmpeg will hear it in the encode (for loudness pass 1)."""
    auds = [_segment_audio(_source_input(source, a, b), a, b, source_has_audio, track=track) for a, b in clip.ranges]
    return _joined_audio(auds, clip.crossfade, downmix=downmix)


def _joined_video(vids: list, clip: Clip):
    if len(vids) == 1:
        return vids[0]
    if clip.crossfade > 0:
        v, length = vids[0], clip.ranges[0][1] - clip.ranges[0][0]
        for k in range(1, len(vids)):
            v = ffmpeg.filter(
                [v, vids[k]],
                "xfade",
                transition="fade",
                duration=_num(clip.crossfade),
                offset=_num(length - clip.crossfade),
            )
            length += (clip.ranges[k][1] - clip.ranges[k][0]) - clip.crossfade
        return v
    return ffmpeg.concat(*vids, v=1, a=0)


def clip_video(source: Path, clip: Clip):
    """The clip's joined picture as the encode sees it, before fitting (the reference for quality scores)."""
    return _joined_video([_segment_video(_source_input(source, a, b)) for a, b in clip.ranges], clip)


def frames_in(start: float, end: float, rate: Fraction) -> int:
    return round((end - start) * rate)


def build_cut_command(ffmpeg_exe: str, source: Path, clip: Clip, rate: Fraction, pieces: list[Path]) -> list[str]:
    """Copy each range's video with an exact frame count (not by timestamps, which let a B-frame or the
    next keyframe leak in): the first half of the stream-copy fast path."""
    outs = []
    for (start, end), piece in zip(clip.ranges, pieces):
        v = _source_input(source, start, end).video
        outs.append(
            ffmpeg.output(v, str(piece), **{"c:v": "copy", "frames:v": frames_in(start, end, rate), "f": "mp4"})
        )
    return ffmpeg.merge_outputs(*outs).global_args(*GLOBAL_ARGS).compile(cmd=ffmpeg_exe, overwrite_output=True)


def build_join_command(
    ffmpeg_exe: str,
    source: Path,
    clip: Clip,
    s: EncodeSettings,
    list_file: Path,
    output: Path,
    *,
    source_has_audio: bool,
    loudness: LoudnessPlan | None = None,
    downmix: bool = False,
    bsf: str | None = None,
) -> list[str]:
    """Join video pieces (stream copies or encoded chunks, listed in `list_file`) without re-encoding,
    restart their timestamps at zero (then `bsf`, another bitstream filter), and encode the audio once from the
    same exact ranges of the source."""
    joined = ffmpeg.input(f"file:{list_file}", f="concat", safe=0, protocol_whitelist="file")
    streams = [joined.video]
    audio = {}
    if s.audio_encoder:
        auds = [
            _segment_audio(_source_input(source, a, b), a, b, source_has_audio, track=s.audio_track)
            for a, b in clip.ranges
        ]
        streams.append(_joined_audio(auds, 0.0, loudness, downmix))
        audio = audio_args(s)
    kwargs = {
        "c:v": "copy",
        "bsf:v": ",".join(["setts=pts=PTS-STARTPTS:dts=DTS-STARTPTS", *([bsf] if bsf else [])]),
        **audio,
        **container_args(s),
        "t": _num(clip.duration),
    }
    return (
        ffmpeg.output(*streams, str(output), **kwargs)
        .global_args(*GLOBAL_ARGS)
        .compile(cmd=ffmpeg_exe, overwrite_output=True)
    )


TWO_PASS = {"h264", "h265", "vp8", "vp9"}  # encoders whose two-pass mode FFmpeg drives


def pass_args(s: EncodeSettings, pass_no: int, prefix: str) -> dict:
    if s.video_codec == "h265":
        return {"x265-params": f"log-level=error:pass={pass_no}:stats={prefix}.log"}
    return {"pass": pass_no, "passlogfile": prefix}


def pass_log_index(settings: list[EncodeSettings], i: int, source_has_audio: bool) -> int:
    """FFmpeg names a pass log by the stream's index across all outputs of the command
    (`prefix-N.log`): the count of streams written by the outputs before target i."""
    return sum(1 + bool(s.audio_encoder and (source_has_audio or s.silent_audio)) for s in settings[:i])


def build_clip_command(
    ffmpeg_exe: str,
    source: Path,
    clip: Clip,
    settings: list[EncodeSettings],
    outputs: list[Path],
    *,
    source_has_audio: bool,
    loudness: LoudnessPlan | None = None,
    passlogs: dict[int, str] | None = None,
    first_pass: bool = False,
    source_size: tuple[int, int] | None = None,
    stream_starts: tuple[float, float] = (0.0, 0.0),
    downmix: bool = False,
) -> list[str]:
    """argv for one FFmpeg process writing every target of one clip.

    `passlogs` (target index -> log prefix) makes those targets two-pass: with `first_pass` the
    command only analyses them (no audio, no files), otherwise it is their second pass."""
    if not settings or len(settings) != len(outputs):
        raise EncodeError(f"{len(settings)} targets for {len(outputs)} outputs", code="command_invalid")
    passlogs = passlogs or {}
    if first_pass:
        settings, outputs, passlogs = _analysis_only(settings, passlogs)
    track = settings[0].audio_track if any(s.audio_encoder for s in settings) else None
    v, auds = _read_ranges(source, clip, source_has_audio, stream_starts, track)
    audio_users = [i for i, s in enumerate(settings) if s.audio_encoder and (source_has_audio or s.silent_audio)]
    a = _joined_audio(auds, clip.crossfade, loudness, downmix) if audio_users else None
    videos, audios = _split(v, len(settings), a, audio_users)
    outs = [
        _clip_output(videos[i], audios.get(i), s, path, clip, source_size, passlogs.get(i), first_pass)
        for i, (s, path) in enumerate(zip(settings, outputs))
    ]
    return ffmpeg.merge_outputs(*outs).global_args(*GLOBAL_ARGS).compile(cmd=ffmpeg_exe, overwrite_output=True)


def _analysis_only(
    settings: list[EncodeSettings], passlogs: dict[int, str]
) -> tuple[list[EncodeSettings], list[Path], dict[int, str]]:
    """Pass 1 writes nothing and hears nothing: the two-pass targets only, video only, to null outputs."""
    keep = sorted(passlogs)
    return (
        [replace(settings[i], audio_encoder=None, silent_audio=False) for i in keep],
        [Path("-")] * len(keep),
        {n: passlogs[i] for n, i in enumerate(keep)},
    )


def _read_ranges(
    source: Path, clip: Clip, source_has_audio: bool, stream_starts: tuple[float, float], track: int | None
) -> tuple[object, list]:
    """Each source range read once: the joined picture, and (with an audio `track`) the ranges' sound."""
    vids, auds = [], []
    v0, a0 = stream_starts  # where video and audio begin in the source, relative to its earliest stream
    for start, end in clip.ranges:
        inp = _source_input(source, start, end)
        vids.append(_segment_video(inp, max(0.0, v0 - start)))
        if track is not None:
            auds.append(_segment_audio(inp, start, end, source_has_audio, max(0.0, a0 - start), track))
    return _joined_video(vids, clip), auds


def _split(v, n: int, a, audio_users: list[int]) -> tuple[list, dict[int, object]]:
    """The joined picture for each of `n` outputs, and the joined sound for each output that has audio."""
    vsplit = v.filter_multi_output("split", n) if n > 1 else None
    asplit = a.filter_multi_output("asplit", len(audio_users)) if len(audio_users) > 1 else None
    videos = [vsplit[i] for i in range(n)] if vsplit is not None else [v]
    audios = {i: asplit[k] if asplit is not None else a for k, i in enumerate(audio_users)}
    return videos, audios


def _clip_output(
    video,
    audio,
    s: EncodeSettings,
    path: Path,
    clip: Clip,
    source_size: tuple[int, int] | None,
    passlog: str | None,
    first_pass: bool,
):
    streams, audio_opts = [video_chain(video, s, source_size)], {}
    if audio is not None:
        streams.append(audio)
        audio_opts = audio_args(s)
    kwargs = {**video_args(s), **audio_opts, **container_args(s), "t": _num(clip.duration)}
    if passlog:
        kwargs.update(pass_args(s, 1 if first_pass else 2, passlog))
    if first_pass:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("movflags",)} | {"f": "null"}
    return ffmpeg.output(*streams, str(path), **kwargs)
