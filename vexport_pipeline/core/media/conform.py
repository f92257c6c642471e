"""Sound that changes format mid-stream, made one format before anything else reads it.

A broadcast recording changes its sound at a programme boundary (stereo 48 kHz to 5.1 44.1 kHz, say). FFmpeg
rebuilds the whole filter graph at such a change, and every filter's state (the `setpts` that starts each segment
at zero, the `fps` filter, a crossfade) starts again with it: the export lost everything after the change. So such
a source is remuxed once, its pictures copied packet for packet and its sound decoded and resampled to what every
target delivers (stereo 48 kHz, 24-bit PCM as SMPTE 302M, lossless), in MPEG-TS like the source, every timestamp kept.
The rest of the pipeline reads that file as the source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av

from vexport_pipeline.core.settings import ffmpeg_exe

from .commands import GLOBAL_ARGS
from .probe import SAFE_OPTIONS, MediaInfo, packet_spans, video_track
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


def sound_formats(info: MediaInfo, track: int | None = None) -> list[SoundFormat]:
    """The used audio track's (or audio track `track`'s) format and each change of it, in order (one entry: it never
    changes). Decodes the track (about 2 s an hour of AAC); only in containers where a change can happen, else [].
    A file that stops reading cleanly keeps what was read up to there (its damage is the decode checks' to report)."""
    if not info.audio or not set(info.format_name.split(",")) & set(CHANGING):
        return []
    out: list[SoundFormat] = []
    try:
        with av.open(str(info.path), options=SAFE_OPTIONS) as container:
            origin = (container.start_time or 0) / av.time_base
            stream = container.streams.audio[info.audio_index if track is None else track]
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue
                for f in frames:
                    if not out or (f.sample_rate, f.layout.name) != (out[-1].sample_rate, out[-1].layout):
                        at = round(float(f.time) - origin, 3) if f.time is not None else 0.0
                        out.append(SoundFormat(at, f.sample_rate, f.layout.name))
                if len(out) > MAX_CHANGES:  # damaged or hostile: enough to know, and a message stays short
                    break
    except (av.error.FFmpegError, OSError, IndexError):
        pass
    return out


MAX_CHANGES = 10  # sound_formats stops after this many changes


@dataclass(frozen=True)
class Span:
    track: int  # among the audio streams
    start: float  # the stream's own timestamps, seconds (what `-copyts` keeps)
    end: float


def continuation(info: MediaInfo, gap: float = 1.0) -> list[Span]:
    """The used audio track, then each track that takes over where the one before ends: at a programme boundary
    a broadcaster may move the sound to another stream (a new PID), and the used one stops there. A track takes
    over if it starts within `gap` seconds of the other's end (or up to 0.5 s before it: encoder priming) and
    runs on past it; two languages, which run side by side, never do. [] where no track takes over. Demuxes the
    sound streams only (the packets' times; no decoding)."""
    if not info.audio or not set(info.format_name.split(",")) & set(CHANGING):
        return []
    try:
        with av.open(str(info.path), options=SAFE_OPTIONS) as container:
            indices = [s.index for s in container.streams.audio]  # container index of each audio track
        st = os.stat(info.path)
        spans = packet_spans(str(info.path), st.st_mtime_ns, st.st_size, tuple(indices))
    except (av.error.FFmpegError, OSError, ValueError):
        return []
    first = {k: spans[0][i] for k, i in enumerate(indices) if i in spans[0]}
    last = {k: spans[1][i] for k, i in enumerate(indices) if i in spans[1]}
    if info.audio_index not in first:
        return []
    chain = [Span(info.audio_index, first[info.audio_index], last[info.audio_index])]
    while nxt := [
        Span(k, first[k], last[k])
        for k in first
        if k not in {c.track for c in chain}
        and chain[-1].end - 0.5 <= first[k] <= chain[-1].end + gap
        and last[k] > chain[-1].end + gap
    ]:
        chain.append(min(nxt, key=lambda c: c.start))
    return chain if len(chain) > 1 else []


def changes_within(formats: list[SoundFormat], ranges: list[tuple[float, float]], margin: float = 1.0) -> bool:
    """Whether a change falls within (or `margin` seconds around: FFmpeg reads a little past a cut) any range; a
    sound that changed more than MAX_CHANGES times may change anywhere (it was not read to its end)."""
    if len(formats) > MAX_CHANGES:
        return True
    return any(a - margin <= f.at <= b + margin for f in formats[1:] for a, b in ranges)


def origin(path: Path | str) -> float:
    """A file's first timestamp (seconds): where its times, and FFmpeg's `-ss`, count from."""
    with av.open(str(path), options=SAFE_OPTIONS) as container:
        return (container.start_time or 0) / av.time_base


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

    path: Path
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
            said.append(
                f"moves to another stream ({', '.join(f'audio track {k + 1} at {t:.3f} s' for t, k in self.joins)})"
            )
        return f"the sound {' and '.join(said)}: read as stereo 48 kHz"


def conformed_copy(source: MediaInfo, ranges: list[tuple[float, float]], work: Path) -> Conformed | None:
    """`work`/source.conformed.ts, where the source's sound changes format, or moves to another stream, within
    `ranges`; else None. A track that takes over is joined on only where no track of the chain changes format
    (FFmpeg's rebuilt filters would restart the join's clock); else the used track alone is conformed."""
    formats, chain, base = sound_formats(source), continuation(source), origin(source.path)
    joins = [(round(c.start - base, 3), c.track) for c in chain[1:]]
    near = any(a - 1.0 <= t <= b + 1.0 for t, _ in joins for a, b in ranges)
    if not (changes_within(formats, ranges) or near):
        return None
    steady = len(formats) <= 1 and all(len(sound_formats(source, c.track)) <= 1 for c in chain[1:])
    dst = work / "source.conformed.ts"
    part = partial_path(dst)
    conform(ffmpeg_exe(), source, part, chain=chain if steady else None)
    os.replace(part, dst)
    return Conformed(dst, round(origin(dst) - base, 6), tuple(formats), tuple(joins) if steady else ())
