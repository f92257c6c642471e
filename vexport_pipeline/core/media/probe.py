"""Probe media with PyAV: streams, codecs, display size (rotation applied), fps, duration, start times."""

from __future__ import annotations

import bisect
import functools
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from vexport_pipeline.core.errors import InputError, Interrupted

# Demuxers a source may use. Playlists and concat lists (hls, concat, dash...) can reference
# other files or URLs, so they are refused outright.
ALLOWED_FORMATS = {
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "avi",
    "dv",  # raw DV, as MiniDV camcorders are captured over FireWire (.dv)
    "mpegts",
    "mxf",
    "flv",
    "mpeg",
    "ogg",
    "asf",
    "h264",
    "hevc",
    "mpegvideo",
    "m4v",
    "wav",
    "gif",
    "ivf",
    "yuv4mpegpipe",
    "nut",
}
# Containers whose durations, as FFmpeg reads them, run from 0 to where the file or a stream ends, not from its
# first timestamp: Matroska's segment duration and track DURATION tags, ASF's play time (which FFmpeg gives every
# stream and then adds each stream's start to for the file's).
ENDS_FROM_ZERO = {"matroska", "asf"}
# Matrix tags (FFmpeg's names) that swscale converts from under its own names; others are taken for BT.709.
SWSCALE_MATRIX = {
    "bt470bg": "bt601",
    "smpte170m": "bt601",
    "bt2020nc": "bt2020",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
}
SAFE_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(sorted(ALLOWED_FORMATS))}


@dataclass
class VideoInfo:
    codec: str
    profile: str | None
    pix_fmt: str | None
    width: int  # coded size
    height: int
    display_width: int  # what a viewer sees: rotation and pixel aspect applied
    display_height: int
    rotation: int
    sar: str
    fps: float
    fps_exact: str  # "30000/1001": the average rate
    frames: int
    duration: float | None
    start_time: float
    bit_rate: int | None
    vfr: bool = False  # variable frame rate: the average differs from the stream's base rate
    base_fps: str = ""  # r_frame_rate, the finest rate timestamps are on
    level: int | None = None  # codec level as coded (H.264: 31 = 3.1)
    color_primaries: str = "unknown"  # bt709, bt2020, ...
    color_trc: str = "unknown"  # bt709, smpte2084 (PQ), arib-std-b67 (HLG), ...
    color_space: str = "unknown"  # the matrix: bt709, bt2020nc, ...
    interlaced: bool = False  # the first frame is coded as fields
    field_order: str = "progressive"  # tff | bff | progressive

    @property
    def rate(self) -> Fraction:
        return Fraction(self.fps_exact)

    @property
    def matrix(self) -> str:
        """The YUV matrix the pictures were made with, by swscale's name: the tag, else what players assume (BT.601
        below 720 lines, BT.709 from there)."""
        if self.color_space == "unknown":
            return "bt601" if self.height < 720 else "bt709"
        return SWSCALE_MATRIX.get(self.color_space, "bt709")

    @property
    def hdr(self) -> str | None:
        """'pq' or 'hlg' for high dynamic range transfer, else None."""
        return {"smpte2084": "pq", "arib-std-b67": "hlg"}.get(self.color_trc)

    @property
    def gamut(self) -> str:
        """The primaries an SDR picture is converted from (zscale's name) where they are wider than BT.709's: BT.2020
        or P3; else bt709 (BT.601's are near enough and, by long practice, not converted; HDR's tone mapping converts
        its own)."""
        wide = self.color_primaries in ("bt2020", "smpte431", "smpte432")
        return self.color_primaries if wide and not self.hdr else "bt709"


@dataclass
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    layout: str
    duration: float | None
    start_time: float
    bit_rate: int | None


@dataclass
class MediaInfo:
    path: str
    format_name: str
    duration: float
    size_bytes: int
    bit_rate: int | None
    start_time: float
    video: VideoInfo | None
    audio: AudioInfo | None
    stream_count: int
    audio_streams: int = 0
    audio_index: int = 0  # which audio stream is used: the one marked default, else the first
    faststart: bool | None = None  # MP4/MOV: moov before mdat
    extra: dict = field(default_factory=dict)

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MediaInfo:
        d = dict(d)
        d["video"] = VideoInfo(**d["video"]) if d.get("video") else None
        d["audio"] = AudioInfo(**d["audio"]) if d.get("audio") else None
        return cls(**d)


def _seconds(value, time_base) -> float | None:
    return float(value * time_base) if value is not None and time_base is not None else None


def _stream_duration(s, ends: bool) -> float | None:
    """A stream's duration. Matroska and WebM have none in the stream header, only the DURATION tag their muxers
    write per track (FFmpeg and mkvmerge, as HH:MM:SS.nnnnnnnnn). That tag, like every duration of a container in
    ENDS_FROM_ZERO (`ends`), is where the stream ends on the file's clock, so the stream's start is taken off."""
    start = _seconds(s.start_time, s.time_base) or 0.0
    if (d := _seconds(s.duration, s.time_base)) is None:
        tag = next((v for k, v in (s.metadata or {}).items() if k.upper().split("-")[0] == "DURATION"), None)
        try:
            h, m, sec = str(tag).strip().split(":")
            d = int(h) * 3600 + int(m) * 60 + float(sec)
        except (ValueError, AttributeError):
            return None
        ends = True
    d = d - start if ends else d
    return d if math.isfinite(d) and d > 0 else None


def mp4_faststart(path: Path) -> bool | None:
    """True when the top-level 'moov' atom comes before 'mdat' (progressive download works)."""
    try:
        with open(path, "rb") as f:
            offset, size_total = 0, path.stat().st_size
            while offset < size_total:
                f.seek(offset)
                header = f.read(16)
                if len(header) < 8:
                    return None
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if size == 1:
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:
                    size = size_total - offset
                if kind == b"moov":
                    return True
                if kind == b"mdat":
                    return False
                if size < 8:
                    return None
                offset += size
    except OSError:
        return None
    return None


def _boxes(data: bytes, start: int, end: int):
    while start + 8 <= end:
        size, kind = int.from_bytes(data[start : start + 4], "big"), data[start + 4 : start + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:
            size = end - start
        if size < header:
            return
        yield kind, start + header, start + size
        start += size


def mp4_edit_lists(path: Path) -> bool | None:
    """True when any track of an MP4/MOV carries an edit list (moov/trak/edts)."""
    try:
        data = Path(path).read_bytes() if Path(path).stat().st_size < 64 << 20 else None
        if data is None:  # big file: read only the moov box
            with open(path, "rb") as f:
                head = f.read(16)
                data = head + f.read()
    except OSError:
        return None
    for kind, a, b in _boxes(data, 0, len(data)):
        if kind == b"moov":
            return any(
                k == b"edts" for tk, ta, tb in _boxes(data, a, b) if tk == b"trak" for k, _, _ in _boxes(data, ta, tb)
            )
    return None


# FFmpeg's enum values (libavutil/pixfmt.h) for the colour properties PyAV reports as integers.
PRIMARIES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    9: "bt2020",
    11: "smpte431",
    12: "smpte432",
}
TRANSFERS = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    18: "arib-std-b67",
}
MATRICES = {0: "gbr", 1: "bt709", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}


def _colour(frame, cc) -> dict:
    def pick(attr: str, names: dict) -> str:
        for obj in (frame, cc):
            value = getattr(obj, attr, None)
            value = getattr(value, "value", value)
            if isinstance(value, int) and value in names:
                return names[value]
        return "unknown"

    interlaced = bool(getattr(frame, "interlaced_frame", False))
    tff = bool(getattr(frame, "top_field_first", True))
    return {
        "color_primaries": pick("color_primaries", PRIMARIES),
        "color_trc": pick("color_trc", TRANSFERS),
        "color_space": pick("colorspace", MATRICES),
        "interlaced": interlaced,
        "field_order": ("tff" if tff else "bff") if interlaced else "progressive",
    }


def _video_info(container, s, name: str, where: str, ends: bool) -> VideoInfo:
    """The first video stream, with its rotation read from the first decoded frame."""
    cc = s.codec_context
    try:
        first = next(container.decode(s))
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        colour = _colour(first, cc)
    except (StopIteration, av.error.FFmpegError):
        raise InputError(
            f"{name}: the video stream has no decodable frame", where=where, code="media_corrupt"
        ) from None
    sar = s.sample_aspect_ratio or Fraction(1)
    if not sar or sar <= 0:
        sar = Fraction(1)
    disp_w, disp_h = cc.width * float(sar), cc.height
    if rotation in (90, 270):
        disp_w, disp_h = disp_h, disp_w
    rate = Fraction(s.average_rate or s.guessed_rate or s.base_rate or Fraction(25)).limit_denominator(1001)
    base = Fraction(s.base_rate or s.guessed_rate or rate).limit_denominator(1001)
    if rate != base and abs(base - rate) <= base / 100 and base <= 240:
        # within 1% of the rate its timestamps are on: constant, and the average is off by how the stream's
        # duration was counted (a fragmented MP4's counts the audio's longer tail: 25 fps read as 24.807, and the
        # export came out at 24.807 fps)
        rate = base
    return VideoInfo(
        codec=cc.codec.canonical_name,
        profile=cc.profile,
        pix_fmt=cc.pix_fmt,
        width=cc.width,
        height=cc.height,
        display_width=int(round(disp_w)),
        display_height=int(round(disp_h)),
        rotation=rotation,
        sar=str(sar),
        fps=round(float(rate), 3),
        fps_exact=str(rate),
        frames=int(s.frames or 0),
        duration=_stream_duration(s, ends),
        start_time=_seconds(s.start_time, s.time_base) or 0.0,
        bit_rate=cc.bit_rate or None,
        vfr=abs(float(base) - float(rate)) > 0.01 * float(rate),
        base_fps=str(base),
        level=cc.level if (cc.level or 0) > 0 else None,
        **colour,
    )


def _audio_info(a, ends: bool) -> AudioInfo:
    ac = a.codec_context
    return AudioInfo(
        codec=ac.codec.canonical_name,
        sample_rate=int(ac.sample_rate or 0),
        channels=int(ac.channels or 0),
        layout=getattr(ac.layout, "name", "") or "",
        duration=_stream_duration(a, ends),
        start_time=_seconds(a.start_time, a.time_base) or 0.0,
        bit_rate=ac.bit_rate or None,
    )


def probe(path: Path | str, *, where: str = "source") -> MediaInfo:
    """Read a file's container and first video/audio stream; refuse what is not readable video."""
    path = Path(path)
    with _open(path, where) as container:
        info = _media_info(container, path, where)
    if set(info.format_name.split(",")) & {"mov", "mp4"}:
        info.faststart = mp4_faststart(path)
        info.extra["edit_list"] = mp4_edit_lists(path)
    return info


def _open(path: Path, where: str):
    """The file opened by an allowed demuxer only (no playlists, nothing that reaches other files)."""
    try:
        container = av.open(str(path), options=SAFE_OPTIONS)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(
            f"{path.name} is not a readable media file ({exc})", where=where, code="media_unreadable"
        ) from None
    if not set(container.format.name.split(",")) & ALLOWED_FORMATS:
        container.close()
        raise InputError(
            f"{path.name}: container format {container.format.name!r} is not allowed",
            where=where,
            code="media_format_refused",
        )
    return container


def _picture(videos: list) -> int | None:
    """Which of the video streams is the source's picture: the first that is not cover art (None: there is none)."""
    return next((k for k, v in enumerate(videos) if not v.disposition & av.stream.Disposition.attached_pic), None)


def _measured(path: Path, vstream, video: VideoInfo, astream, audio: AudioInfo | None) -> float | None:
    """Durations read from the packets, for a file that declares none: a WebM written live (a browser's
    MediaRecorder, OBS's streaming output) has no duration, cues or DURATION tags, and was refused as having "no
    measurable duration". Demuxes the picture and sound streams to their last packet (no decoding: a few seconds
    for an hour), in a container of its own (a raw elementary stream cannot seek back), and sets each stream's
    duration; returns the file's, from its first timestamp to its last end (None: no packet has a timestamp)."""
    pairs = [(info, st.index, st.start_time) for info, st in ((video, vstream), (audio, astream)) if info and st]
    st = os.stat(path)
    first, last = packet_spans(str(path), st.st_mtime_ns, st.st_size, tuple(k for _, k, _ in pairs))
    for info, k, declared_start in pairs:
        if k not in last:
            continue
        if declared_start is None:
            info.start_time = first[k]
        if last[k] > info.start_time:
            info.duration = last[k] - info.start_time
    starts = [info.start_time for info, k, _ in pairs if k in last]
    return max(last.values()) - min(starts) if starts else None


@functools.lru_cache(maxsize=16)
def packet_spans(path: str, mtime_ns: int, size: int, streams: tuple[int, ...]) -> tuple[dict, dict]:
    """({stream index: first timestamp}, {stream index: last end}) in seconds, by demuxing; kept per file version,
    as an export probes its source several times."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    with av.open(path, options=SAFE_OPTIONS) as container:
        try:
            for packet in container.demux([container.streams[k] for k in streams]):
                if packet.pts is None or packet.time_base is None:
                    continue
                k, t = packet.stream.index, float(packet.pts * packet.time_base)
                first[k] = min(first.get(k, t), t)
                last[k] = max(last.get(k, t), t + float((packet.duration or 0) * packet.time_base))
        except av.error.FFmpegError:  # damaged past some point: measured to there (the decode check says the rest)
            pass
    return first, last


def _media_info(container, path: Path, where: str) -> MediaInfo:
    videos = list(container.streams.video)
    picture = _picture(videos)
    astreams = list(container.streams.audio)
    ends = bool(set(container.format.name.split(",")) & ENDS_FROM_ZERO)
    video = _video_info(container, videos[picture], path.name, where, ends) if picture is not None else None
    default = next((k for k, a in enumerate(astreams) if a.disposition & av.stream.Disposition.default), 0)
    audio = _audio_info(astreams[default], ends) if astreams else None
    duration = container.duration / av.time_base if container.duration else None
    if not duration and video and not video.duration:
        duration = _measured(path, videos[picture], video, astreams[default] if astreams else None, audio)
    start = (container.start_time or 0) / av.time_base
    if duration and ends:
        # the file's length runs from its first timestamp to the last stream's end: a Matroska remux of a TS whose
        # timestamps start at 5 s claimed 8.5 s for 3.5 (refused as truncated), a WMV whose pictures start 46 ms in
        # claimed 3.092 s for 3.046 (failed its duration check)
        last = [i.start_time + i.duration for i in (video, audio) if i and i.duration]
        length = (max(last) if last else duration) - start
        duration = length if length > 0 else duration
    if duration is None and video and video.duration:
        duration = video.duration
    return MediaInfo(
        path=str(path),
        format_name=container.format.name,
        duration=round(duration or 0.0, 6),
        size_bytes=path.stat().st_size,
        bit_rate=container.bit_rate or None,
        start_time=start,
        video=video,
        audio=audio,
        stream_count=len(container.streams),
        audio_streams=len(astreams),
        audio_index=default if astreams else 0,
    )


def require_video(info: MediaInfo, *, where: str = "source") -> MediaInfo:
    name = Path(info.path).name
    if info.video is None:
        raise InputError(f"{name} has no video stream", where=where, code="media_no_video")
    if not info.duration or info.duration <= 0:
        raw = set(info.format_name.split(",")) & {"h264", "hevc", "mpegvideo"}
        hint = " (a raw video stream carries no timestamps: put it in MP4 or Matroska first)" if raw else ""
        raise InputError(f"{name} has no measurable duration{hint}", where=where, code="media_corrupt")
    return info


def keyframe_times(path: Path | str, limit: int = 100_000) -> list[float]:
    """Presentation times of the video keyframes, by demuxing only (no decode)."""
    out: list[float] = []
    with av.open(str(path), options=SAFE_OPTIONS) as container:
        if not container.streams.video:
            return out
        stream = container.streams.video[video_track(path)]
        start = stream.start_time or 0
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                out.append(round(float((packet.pts - start) * stream.time_base), 6))
                if len(out) >= limit:
                    break
    return sorted(out)


# Containers without an index, where FFmpeg seeks by bisecting timestamps: it lands on a packet at or before the time
# asked for, not on a keyframe, so decoding starts at the next keyframe, up to a GOP late or, past the last keyframe,
# never (an open-GOP MPEG-TS cut at 2.5 s of 4 s decoded nothing; at 0.5 s it began at 2.0 s).
SEEK_BY_TIMESTAMP = ("mpegts", "mpeg", "h264", "hevc", "mpegvideo")
SEEK_MARGIN = 0.001  # seek this far before the keyframe, so the packet found is never the one after it


@functools.lru_cache(maxsize=16)
def _layout(path: str, mtime_ns: int, size: int) -> tuple[int, tuple[float, ...]]:
    """(The video stream a source's picture comes from, counted among its video streams: the first that is not
    cover art; keyframe times where FFmpeg seeks by timestamp, on its `-ss` scale, else ())."""
    with av.open(path, options=SAFE_OPTIONS) as container:
        videos = list(container.streams.video)
        track = _picture(videos) or 0
        if not videos or not set(container.format.name.split(",")) & set(SEEK_BY_TIMESTAMP):
            return track, ()
        stream = videos[track]
        origin = (container.start_time or 0) / av.time_base  # -ss counts from the earliest stream's start
        packets = (p for p in container.demux(stream) if p.is_keyframe and p.pts is not None)
        return track, tuple(sorted(float(p.pts * stream.time_base) - origin for p in packets))


def _layout_of(path: Path | str) -> tuple[int, tuple[float, ...]]:
    try:
        st = os.stat(path)
        return _layout(str(path), st.st_mtime_ns, st.st_size)
    except (OSError, av.error.FFmpegError):  # unreadable: the read itself will say so
        return 0, ()


def video_track(path: Path | str) -> int:
    """Which of a source's video streams is its picture (`v:N`): the one `probe` describes, never cover art."""
    return _layout_of(path)[0]


def seek_point(path: Path | str, t: float) -> float:
    """Where FFmpeg's input seek for a cut at `t` must aim so that decoding starts at or before `t`: `t` itself,
    except in containers that seek by timestamp (`SEEK_BY_TIMESTAMP`), where it is just before the last keyframe at
    or before `t` (the frames between it and `t` are decoded and trimmed by the caller)."""
    if t <= 0:
        return t
    keys = _layout_of(path)[1]
    i = bisect.bisect_right(keys, t + SEEK_MARGIN) - 1
    return max(0.0, keys[i] - SEEK_MARGIN) if i >= 0 else t


# Such a container's seek compares decode timestamps, which B-frames put before the presentation times the keyframes
# are listed at: aimed at a keyframe's time, it lands on the packet after the keyframe, and decoding starts a GOP late.
# FFmpeg's own `-ss` aims this much earlier on such a format (fftools' "dts_heuristic"); a library seek must too.
DTS_LEAD = 3 / 23


def seek_before(container, stream, path: Path | str, t: float) -> None:
    """Seek a PyAV container so that decoding `stream` starts at the keyframe at or before `t` (seconds from the
    container's start): `seek_point`, less `DTS_LEAD` in containers that seek by timestamp (FFmpeg's `-ss` takes
    that lead itself)."""
    at = seek_point(path, t) - (DTS_LEAD if _layout_of(path)[1] else 0.0)
    origin = (container.start_time or 0) / av.time_base
    container.seek(int((at + origin) / stream.time_base), stream=stream, backward=True)


def damaged_at(path: Path | str, ranges: list[tuple[float, float]], limit: int = 50) -> tuple[float, ...]:
    """When (seconds from the source's start, within `ranges`) the source's pictures do not decode cleanly: frames
    the decoder flags as corrupt (it concealed damaged data, as an encode does without a word) and packets it cannot
    decode. Each range is decoded once from the keyframe before it; errors before that keyframe are the seek's, not
    the file's. At most `limit` times."""
    try:
        st = os.stat(path)
        key = (str(path), st.st_mtime_ns, st.st_size, tuple(map(tuple, ranges)), limit)
        if len(_DECODING) > 256:
            _DECODING.clear()
        with _DECODING.setdefault(key, threading.Lock()):  # one decode: an export's checks run side by side
            return _damaged_at(*key)
    except (OSError, av.error.FFmpegError, IndexError, ValueError):  # unreadable: the checks that read it say so
        return ()


_DECODING: dict[tuple, threading.Lock] = {}


@functools.lru_cache(maxsize=16)
def _damaged_at(path: str, mtime_ns: int, size: int, ranges: tuple, limit: int) -> tuple[float, ...]:
    bad: list[float] = []
    with av.open(path, options=SAFE_OPTIONS) as container:
        stream = container.streams.video[_layout(path, mtime_ns, size)[0]]
        stream.thread_type = "AUTO"
        origin, base = (container.start_time or 0) / av.time_base, stream.time_base
        for start, end in ranges:
            seek_before(container, stream, path, start)
            settled = False  # a keyframe decoded since the seek
            for packet in container.demux(stream):
                at = float(packet.pts * base) - origin if packet.pts is not None else None
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad += [at] if settled and at is not None and start <= at < end else []
                    continue
                times = [(f.time - origin, f.is_corrupt) for f in frames if f.time is not None]
                settled = settled or any(f.key_frame for f in frames)
                bad += [t for t, corrupt in times if settled and corrupt and start <= t < end]
                if len(bad) >= limit or any(t >= end for t, _ in times) or (at is not None and at > end + 5):
                    break
    return tuple(sorted(bad)[:limit])


def picture_sizes(path: Path | str, ranges: list[tuple[float, float]]) -> frozenset[tuple[int, int]]:
    """The picture sizes (width, height) the source's keyframes decode to within `ranges` (seconds from the
    source's start); empty when they cannot be read. A broadcast recording changes size at a programme boundary,
    and the probe sees only the first."""
    return frozenset((w, h) for _, w, h, _ in picture_shapes(path, ranges))


def picture_shapes(path: Path | str, ranges: list[tuple[float, float]]) -> tuple[tuple[float, int, int, str], ...]:
    """Each shape the source's picture takes within `ranges`, in order, with when it starts: (seconds from the
    source's start, width, height, sample aspect ratio as "num:den"), a new entry at each change (at most
    MAX_SHAPES + 1); () when it cannot be read. A picture changes shape only at a
    keyframe (a new sequence header), so decoding keyframes alone finds every shape, and a keyframe whose sequence
    headers are those of the last one decoded is not decoded at all."""
    try:
        st = os.stat(path)
        return _picture_shapes(str(path), st.st_mtime_ns, st.st_size, tuple(map(tuple, ranges)))
    except (OSError, av.error.FFmpegError, IndexError, ValueError):
        return ()


@functools.lru_cache(maxsize=16)
def _picture_shapes(path: str, mtime_ns: int, size: int, ranges: tuple) -> tuple[tuple[float, int, int, str], ...]:
    shapes: list[tuple[float, int, int, str]] = []
    with av.open(path, options=SAFE_OPTIONS) as container:
        stream = container.streams.video[_layout(path, mtime_ns, size)[0]]
        cc = stream.codec_context
        cc.skip_frame = "NONKEY"
        annex_b = bool(set(container.format.name.split(",")) & set(SEEK_BY_TIMESTAMP))
        origin, base = (container.start_time or 0) / av.time_base, stream.time_base
        headers, decoded_at = None, -math.inf  # the sequence headers of the last keyframe decoded, and when
        for start, end in ranges:
            seek_before(container, stream, path, start)
            for packet in container.demux(stream):
                at = float(packet.pts * base) - origin if packet.pts is not None else None
                if at is not None and at >= end:
                    break
                if not packet.is_keyframe:
                    continue
                these = sequence_headers(bytes(packet), cc.name, annex_b)
                # the same headers, the same shape; a codec without them (ProRes, DNxHR, MJPEG: every frame a
                # keyframe) is looked at every few seconds, not decoded whole
                if (these is not None and these == headers) or (these is None and (at or 0.0) - decoded_at < 5.0):
                    continue
                try:
                    frames = [*cc.decode(packet), *cc.decode(None)]
                except av.error.FFmpegError:  # damage: the next keyframe is tried; `damaged_at` reports it
                    frames = []
                cc.flush_buffers()
                if frames:  # a keyframe that decoded to nothing (an I-frame without a recovery point) settles nothing
                    headers, decoded_at = these, at if at is not None else decoded_at
                for f in frames:
                    sar = cc.sample_aspect_ratio or Fraction(1)
                    shape = (f.width, f.height, f"{sar.numerator}:{sar.denominator}")
                    if not shapes or shapes[-1][1:] != shape:  # the keyframe's time, or the range's start
                        shapes.append((round(max(at or 0.0, start), 3), *shape))
                if len(shapes) > MAX_SHAPES:  # damaged or hostile: enough to know
                    return tuple(shapes)
    return tuple(shapes)


MAX_SHAPES = 20  # picture_shapes stops after this many changes


# Which units are sequence headers: H.264's SPS, HEVC's VPS and SPS (NAL types), MPEG-2's sequence header (start
# code B3) and its sequence and display extensions (B5 with extension id 1 or 2; a picture's own extension differs
# on every picture).
SEQUENCE_UNITS = {
    "h264": lambda u: u[0] & 0x1F == 7,
    "hevc": lambda u: (u[0] >> 1) & 0x3F in (32, 33),
    "mpeg2video": lambda u: u[0] == 0xB3 or (u[0] == 0xB5 and len(u) > 1 and u[1] >> 4 in (1, 2)),
}


def sequence_headers(data: bytes, codec: str, annex_b: bool) -> bytes | None:
    """The sequence headers a packet carries, joined (what sets the picture's size and shape); b"" where it carries
    none (in MP4 and Matroska, H.264's are in the stream's extradata), None for a codec not parsed here. `annex_b`:
    units after start codes (MPEG-TS, MPEG-PS, raw streams; MPEG-2 always), else 4-byte length-prefixed."""
    wanted = SEQUENCE_UNITS.get(codec)
    if wanted is None:
        return None
    if annex_b or codec == "mpeg2video":
        units = [u.rstrip(b"\x00") for u in data.split(b"\x00\x00\x01")]
    else:
        units, i = [], 0
        while i + 4 <= len(data):
            n = int.from_bytes(data[i : i + 4], "big")
            units.append(data[i + 4 : i + 4 + n])
            i += 4 + n
    return b"".join(u for u in units if u and wanted(u))


def count_frames(path: Path | str) -> tuple[int, int, list[str]]:
    """Decode every video and audio frame; return (video frames, audio samples, errors)."""
    errors: list[str] = []
    frames = samples = 0
    try:
        with av.open(str(path), options=SAFE_OPTIONS) as container:
            streams = list(container.streams.video[:1] + container.streams.audio[:1])
            for s in streams:
                s.thread_type = "AUTO"
            for packet in container.demux(*streams):
                try:
                    for frame in packet.decode():
                        if isinstance(frame, av.VideoFrame):
                            frames += 1
                        else:
                            samples += frame.samples
                except av.error.FFmpegError as exc:
                    at = f"{float(packet.pts * packet.time_base):.3f}" if packet.pts is not None else "?"
                    errors.append(f"decode error at {at} s: {exc}")
                    if len(errors) > 20:
                        break
    except av.error.FFmpegError as exc:
        errors.append(str(exc))
    return frames, samples, errors


def check_decodable_to(info: MediaInfo, end: float, *, window: float = 1.0) -> None:
    """Refuse a source whose pictures stop before `end` although its index promises more (an MP4 cut short
    after its moov box probes whole): decode the last `window` seconds before `end`, in an FFmpeg process."""
    import re

    from vexport_pipeline.core.media.runner import capture, signal_name
    from vexport_pipeline.core.settings import ffmpeg_exe
    from vexport_pipeline.core.timecode import fmt_clock

    start = max(0.0, end - window)
    at = seek_point(info.path, start)  # an MPEG-TS seek lands before a keyframe: decode from it, count what follows
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1"]
    argv += [
        "-protocol_whitelist",
        "file",
        "-ss",
        f"{at:.3f}",
        "-i",
        f"file:{info.path}",
        "-t",
        f"{end - at:.3f}",
    ]
    argv += [
        "-map",
        f"0:v:{video_track(info.path)}",
        "-vf",
        f"trim=start={start - at:.3f}",
        "-f",
        "null",
        "-",
    ]  # the pictures after `start`
    for _ in range(2):  # a second try where FFmpeg gives no reason: a decode stopped by a signal proves nothing
        proc = capture(argv, timeout=120)
        frames = re.findall(r"^frame=(\d+)", proc.stdout, re.M)
        if proc.returncode == 0 and frames and int(frames[-1]) > 0:
            return
        if proc.returncode >= 0 and proc.stderr.strip():
            break  # FFmpeg said what is wrong with the file
    name = Path(info.path).name
    if proc.returncode < 0 and not proc.stderr.strip():
        raise Interrupted(
            f"{name}: the check that decodes {fmt_clock(start)}-{fmt_clock(end)} was stopped by"
            f" {signal_name(-proc.returncode)} twice, so nothing is known against the file; try again",
            where="source",
        )
    detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no picture could be decoded"
    if proc.returncode:
        detail += f"; FFmpeg exited with {proc.returncode if proc.returncode > 0 else signal_name(-proc.returncode)}"
    raise InputError(
        f"{name} is truncated or damaged: nothing decodes between {fmt_clock(start)} and {fmt_clock(end)}, although"
        f" it claims {info.duration:.3f} s ({detail[:200]})",
        where="source",
        code="media_truncated",
    )


def timestamp_jumps(info: MediaInfo, *, min_gap: float = 5.0, limit: int = 10) -> list[tuple[float, float]]:
    """(before, after) times, from the start, where an MPEG-TS/M2TS source's video timestamps jump by more
    than `min_gap` seconds (a broadcast splice, a recorder restarting): the probed duration then counts time
    that holds no pictures. Demux only; other containers do not carry such discontinuities."""
    if "mpegts" not in info.format_name or info.video is None:
        return []
    out: list[tuple[float, float]] = []
    with av.open(str(info.path), options=SAFE_OPTIONS) as container:
        stream = container.streams.video[0]
        base, last = None, None
        for packet in container.demux(stream):
            if packet.dts is None:
                continue
            t = float(packet.dts * stream.time_base)
            base = t if base is None else base
            if last is not None and abs(t - last) > min_gap:
                frame = 1 / info.video.fps if info.video.fps else 0.0  # the last picture lasts one frame
                out.append((round(last - base + frame, 3), round(t - base, 3)))
                if len(out) >= limit:
                    break
            last = t
    return out
