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
from .probe import SAFE_OPTIONS, MediaInfo, video_track
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


def sound_formats(info: MediaInfo) -> list[SoundFormat]:
    """The used audio track's format and each change of it, in order (one entry: it never changes). Decodes the
    track (about 2 s an hour of AAC); only in containers where a change can happen, else []. A file that stops
    reading cleanly keeps what was read up to there (its damage is the decode checks' to report)."""
    if not info.audio or not set(info.format_name.split(",")) & set(CHANGING):
        return []
    out: list[SoundFormat] = []
    try:
        with av.open(str(info.path), options=SAFE_OPTIONS) as container:
            origin = (container.start_time or 0) / av.time_base
            stream = container.streams.audio[info.audio_index]
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


def conform_command(ffmpeg_exe: str, source: MediaInfo, out: Path) -> list[str]:
    """The source's picture copied (the packets before its first keyframe too) and its sound (the used track) as
    stereo 48 kHz PCM, every timestamp as it was (FFmpeg would otherwise close up a jump in them, and the MPEG-TS
    muxer add its own delay), so that a time in the source is the same time in the copy."""
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
        "-map",
        f"0:a:{source.audio_index}",
        "-c:v",
        "copy",
        "-copyinkf",
        "-c:a",
        "s302m",
        "-strict",
        "experimental",
        "-ac",
        "2",
        "-ar",
        "48000",
        "-mpegts_copyts",
        "1",
        "-f",
        "mpegts",
        str(out),
    ]


def conform(ffmpeg_exe: str, source: MediaInfo, out: Path, timeout: float | None = None) -> None:
    """Write `out` (removed again if FFmpeg fails or is interrupted)."""
    run_ffmpeg(
        conform_command(ffmpeg_exe, source, out),
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
    formats: tuple[SoundFormat, ...]  # the source's sound formats, in order

    def changes(self) -> tuple[str, ...]:
        return tuple(f"{f} from {f.at:.3f} s" for f in self.formats)

    def __str__(self) -> str:
        changes = ", ".join(f"at {f.at:.3f} s to {f}" for f in self.formats[1:])
        more = " and on" if len(self.formats) > MAX_CHANGES else ""
        return f"the sound changes format mid-stream ({self.formats[0]}, {changes}{more}): read as stereo 48 kHz"


def conformed_copy(source: MediaInfo, ranges: list[tuple[float, float]], work: Path) -> Conformed | None:
    """`work`/source.conformed.ts, where the source's sound changes format within `ranges`; else None."""
    formats = sound_formats(source)
    if not changes_within(formats, ranges):
        return None
    dst = work / "source.conformed.ts"
    part = partial_path(dst)
    conform(ffmpeg_exe(), source, part)
    os.replace(part, dst)
    return Conformed(dst, round(origin(dst) - origin(source.path), 6), tuple(formats))
