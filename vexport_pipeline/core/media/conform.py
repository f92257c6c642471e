"""Sound that changes format mid-stream, made one format before anything else reads it.

A broadcast recording changes its sound at a programme boundary (stereo 48 kHz to 5.1 44.1 kHz, say). FFmpeg
rebuilds the whole filter graph at such a change, and every filter's state (the `setpts` that starts each segment
at zero, the `fps` filter, a crossfade) starts again with it: the export lost everything after the change. So such
a source is remuxed once, its pictures copied packet for packet and its sound decoded and resampled to what every
target delivers (stereo 48 kHz, 24-bit PCM as SMPTE 302M, lossless), in MPEG-TS like the source, every timestamp kept.
The rest of the pipeline reads that file as the source.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import av

from vexport_pipeline.core.settings import ffmpeg_exe

from .commands import GLOBAL_ARGS
from .probe import SAFE_OPTIONS, MediaInfo, probe, video_track
from .render import partial_path
from .runner import run_ffmpeg

CHANGING = ("mpegts", "mpeg")  # containers whose sound can change format mid-stream (broadcast, DVD)


@dataclass(frozen=True)
class SoundFormat:
    at: float  # seconds from the source's start
    sample_rate: int
    layout: str

    def __str__(self) -> str:
        return f"{self.layout} {self.sample_rate / 1000:g} kHz"


MAX_CHANGES = 10  # a track's formats are recorded up to this many changes


@dataclass(frozen=True)
class Span:
    track: int  # among the audio streams
    start: float  # the stream's own timestamps, seconds (what `-copyts` keeps)
    end: float


@dataclass(frozen=True)
class _Track:
    formats: tuple[SoundFormat, ...]  # its format and each change, at most MAX_CHANGES + 1
    start: float
    end: float


def _tracks(info: MediaInfo) -> dict[int, _Track]:
    """Every sound stream of a source whose sound can change (`CHANGING`), read in one pass: demuxed once, each
    decoded (about 2 s an hour of AAC a track); {} for other sources. Kept per file version: the format scan, the
    stream that takes over and the check of that one's formats all read it."""
    if not info.audio or not set(info.format_name.split(",")) & set(CHANGING):
        return {}
    try:
        st = os.stat(info.path)
        return _read_tracks(str(info.path), st.st_mtime_ns, st.st_size)
    except (av.error.FFmpegError, OSError, ValueError):
        return {}


@functools.lru_cache(maxsize=8)
def _read_tracks(path: str, mtime_ns: int, size: int) -> dict[int, _Track]:
    formats: dict[int, list[SoundFormat]] = {}
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    with av.open(path, options=SAFE_OPTIONS) as container:
        origin = (container.start_time or 0) / av.time_base
        streams = list(container.streams.audio)
        try:
            for packet in container.demux(*streams):
                k = streams.index(packet.stream)
                if packet.pts is not None and packet.time_base is not None:
                    t = float(packet.pts * packet.time_base)
                    first[k] = min(first.get(k, t), t)
                    last[k] = max(last.get(k, t), t + float((packet.duration or 0) * packet.time_base))
                seen = formats.setdefault(k, [])
                if len(seen) > MAX_CHANGES:  # damaged or hostile: enough to know, and a message stays short
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:  # damage is the decode checks' to report
                    continue
                for f in frames:
                    if not seen or (f.sample_rate, f.layout.name) != (seen[-1].sample_rate, seen[-1].layout):
                        at = round(float(f.time) - origin, 3) if f.time is not None else 0.0
                        seen.append(SoundFormat(at, f.sample_rate, f.layout.name))
        except av.error.FFmpegError:  # a file that stops reading cleanly: what was read up to there
            pass
    return {k: _Track(tuple(formats.get(k, ())), first[k], last[k]) for k in first}


def sound_formats(info: MediaInfo, track: int | None = None) -> list[SoundFormat]:
    """The used audio track's (or audio track `track`'s) format and each change of it, in order (one entry: it never
    changes), at most MAX_CHANGES + 1; [] where the source's sound cannot change (`CHANGING`)."""
    found = _tracks(info).get(info.audio_index if track is None else track)
    return list(found.formats) if found else []


def continuation(info: MediaInfo, gap: float = 1.0) -> list[Span]:
    """The used audio track, then each track that takes over where the one before ends: at a programme boundary
    a broadcaster may move the sound to another stream (a new PID), and the used one stops there. A track takes
    over if it starts within `gap` seconds of the other's end (or up to 0.5 s before it: encoder priming) and
    runs on past it; two languages, which run side by side, never do. [] where no track takes over."""
    tracks = _tracks(info)
    if info.audio_index not in tracks:
        return []
    spans = {k: Span(k, t.start, t.end) for k, t in tracks.items()}
    chain = [spans[info.audio_index]]
    while nxt := [
        c
        for c in spans.values()
        if c not in chain and chain[-1].end - 0.5 <= c.start <= chain[-1].end + gap and c.end > chain[-1].end + gap
    ]:
        chain.append(min(nxt, key=lambda c: c.start))
    return chain if len(chain) > 1 else []


def changes_within(formats: list[SoundFormat], ranges: list[tuple[float, float]], margin: float = 1.0) -> bool:
    """Whether a change falls within (or `margin` seconds around: FFmpeg reads a little past a cut) any range; a
    sound that changed more than MAX_CHANGES times may change anywhere (it was not followed to its end)."""
    if len(formats) > MAX_CHANGES:
        return True
    return any(a - margin <= f.at <= b + margin for f in formats[1:] for a, b in ranges)


def conform_command(ffmpeg_exe: str, source: MediaInfo, out: Path, chain: list[Span] | None = None) -> list[str]:
    """The source's picture copied (the packets before its first keyframe too) and its sound (the used track, or
    the tracks of `chain` one after the other, each until the next begins) as stereo 48 kHz PCM, every timestamp as
    it was (FFmpeg would otherwise close up a jump in them, and the MPEG-TS muxer add its own delay), so that a
    time in the source is the same time in the copy."""
    if chain:  # concat counts from zero: each track from its own start, the whole put back at the first one's
        parts = []
        for k, span in enumerate(chain):
            part = f"[0:a:{span.track}]aresample=48000,aformat=channel_layouts=stereo,asetpts=PTS-STARTPTS"
            if k + 1 < len(chain):
                length = f"{chain[k + 1].start - span.start:.6f}"
                part += f",atrim=duration={length},apad=whole_dur={length}"
            parts.append(f"{part}[a{k}]")
        joined = "".join(f"[a{k}]" for k in range(len(chain)))
        graph = ";".join([*parts, f"{joined}concat=n={len(chain)}:v=0:a=1,asetpts=PTS+{chain[0].start:.6f}/TB[a]"])
        sound = ["-filter_complex", graph, "-map", "[a]"]
    else:
        sound = ["-map", f"0:a:{source.audio_index}", "-ac", "2", "-ar", "48000"]
    return [
        ffmpeg_exe,
        *GLOBAL_ARGS,
        "-y",
        "-copyts",
        "-protocol_whitelist",
        "file",
        "-i",
        f"file:{source.path}",
        "-map",
        f"0:v:{video_track(source.path)}",
        *sound,
        "-c:v",
        "copy",
        "-copyinkf",
        "-c:a",
        "s302m",
        "-strict",
        "experimental",
        "-mpegts_copyts",
        "1",
        "-f",
        "mpegts",
        str(out),
    ]


def conform(
    ffmpeg_exe: str, source: MediaInfo, out: Path, timeout: float | None = None, chain: list[Span] | None = None
) -> None:
    """Write `out` (removed again if FFmpeg fails or is interrupted)."""
    run_ffmpeg(
        conform_command(ffmpeg_exe, source, out, chain),
        duration=source.duration,
        outputs=[out],
        timeout=timeout,
        where="conforming the sound",
    )


@dataclass(frozen=True)
class Conformed:
    """The copy an export reads instead of its source."""

    info: MediaInfo  # the copy, probed
    offset: float  # how much later than the source it starts (it lacks the source's earliest streams); usually 0
    formats: tuple[SoundFormat, ...]  # the used track's sound formats, in order
    joins: tuple[tuple[float, int], ...] = ()  # (seconds from the source's start, audio track) where another takes over

    def changes(self) -> tuple[str, ...]:
        return tuple(f"{f} from {f.at:.3f} s" for f in self.formats) + tuple(
            f"audio track {k + 1} from {t:.3f} s" for t, k in self.joins
        )

    def __str__(self) -> str:
        said = []
        if len(self.formats) > 1:
            changes = ", ".join(f"at {f.at:.3f} s to {f}" for f in self.formats[1:])
            more = " and on" if len(self.formats) > MAX_CHANGES else ""
            said.append(f"changes format mid-stream ({self.formats[0]}, {changes}{more})")
        if self.joins:
            tracks = ", ".join(f"audio track {k + 1} at {t:.3f} s" for t, k in self.joins)
            said.append(f"moves to another stream ({tracks})")
        return f"the sound {' and '.join(said)}: read as stereo 48 kHz"


def conformed_copy(source: MediaInfo, ranges: list[tuple[float, float]], work: Path) -> Conformed | None:
    """`work`/source.conformed.ts, where the source's sound changes format, or moves to another stream, within
    `ranges`; else None. A track that takes over is joined on only where no track of the chain changes format
    (FFmpeg's rebuilt filters would restart the join's clock); else the used track alone is conformed."""
    formats, chain = sound_formats(source), continuation(source)
    joins = [(round(c.start - source.start_time, 3), c.track) for c in chain[1:]]
    near = any(a - 1.0 <= t <= b + 1.0 for t, _ in joins for a, b in ranges)
    if not (changes_within(formats, ranges) or near):
        return None
    steady = len(formats) <= 1 and all(len(sound_formats(source, c.track)) <= 1 for c in chain[1:])
    dst = work / "source.conformed.ts"
    part = partial_path(dst)
    conform(ffmpeg_exe(), source, part, chain=chain if steady else None)
    os.replace(part, dst)
    info = probe(dst)
    offset = round(info.start_time - source.start_time, 6)
    return Conformed(info, offset, tuple(formats), tuple(joins) if steady else ())
