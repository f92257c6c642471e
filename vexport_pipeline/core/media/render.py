"""Render one clip to all of its targets in one FFmpeg process, then probe what was written."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from vexport_pipeline.core.errors import EncodeError
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.presets import CODECS, EncodeSettings, fit_size_cap

from . import loudness as loud
from .cache import RenditionCache, rendition_key
from .commands import TWO_PASS, build_clip_command, build_cut_command, build_join_command, clip_audio, pass_log_index
from .probe import MediaInfo, picture_sizes, seek_point
from .runner import Progress, RunResult, run_ffmpeg
from .timeline import Clip

log = logging.getLogger("vexport.render")
CPU_ENCODERS = {codec: encoder for codec, (encoder, _) in CODECS.items()}
COPYABLE = {"h264": "h264", "h265": "hevc"}  # target codec -> source codec that can be copied into it


def can_copy(source: MediaInfo, clip: Clip, s: EncodeSettings) -> bool:
    """Stream copy gives the same picture as an encode would, only faster: the source already is the
    target's codec, size, rate and pixel format, every cut falls on a keyframe, and no crossfade."""
    v = source.video
    return bool(
        v
        and clip.cuts_on_keyframes
        and not clip.crossfade
        and s.container in ("mp4", "mov")
        and COPYABLE.get(s.video_codec) == v.codec
        and v.rotation == 0
        and v.sar == "1"
        and not v.vfr
        and (v.width, v.height) == (s.width, s.height)
        and v.rate == s.rate
        and v.pix_fmt == s.pix_fmt
        and not s.crf_explicit
        and not s.video_bitrate
        and all(seek_point(source.path, a) >= a for a, _ in clip.ranges)  # an MPEG-TS cut is decoded from before it
        and _starts(source)[0] < 0.5 / v.fps  # a copy cannot hold back a picture that starts after the sound
        and (v.color_space != "unknown" or v.height >= 720)  # untagged HD is BT.709, and the copy is tagged so
        and (s.matrix, s.primaries) == ("bt709", "bt709")  # other colours are converted, not copied
        and picture_sizes(source.path, clip.ranges) == {(v.width, v.height)}  # no size change mid-stream (last:
        # it decodes the keyframes)
    )


def retag(source: MediaInfo) -> str | None:
    """The bitstream filter that tags a copied HD stream BT.709 where its tags are missing (encodes are tagged so),
    else None. A stream tagged with another matrix keeps its own tags."""
    v = source.video
    tags = (v.color_primaries, v.color_trc, v.color_space) if v else ()
    if "unknown" not in tags or v.color_space not in ("unknown", "bt709"):
        return None
    tags = "colour_primaries=1:transfer_characteristics=1:matrix_coefficients=1"
    return f"{'h264' if v.codec == 'h264' else 'hevc'}_metadata={tags}"


def _starts(source: MediaInfo) -> tuple[float, float]:
    """(video, audio) start in the source relative to its earliest stream: a gap that cuts at 0 keep."""
    if not (source.video and source.audio):
        return (0.0, 0.0)
    base = min(source.video.start_time, source.audio.start_time)
    return (source.video.start_time - base, source.audio.start_time - base)


def _size(source: MediaInfo) -> tuple[int, int] | None:
    return (source.video.display_width, source.video.display_height) if source.video else None


def partial_path(final: Path) -> Path:
    """Where FFmpeg writes before the file is complete; same folder, so the rename is atomic."""
    return final.with_name(f".{final.stem}.partial{final.suffix}")


@dataclass
class ClipRender:
    clip: Clip
    paths: list[Path]
    argv: list[str]  # empty when every target came from the cache
    wall_s: float  # every FFmpeg run of this clip: copies, analysis pass, encode (0 when all came from the cache)
    cached: list[bool]
    copied: list[bool] = field(default_factory=list)
    loudness: dict | None = None  # pass-1 measurement and the mode pass 2 used
    encoders: list[str] = field(default_factory=list)  # what each target was encoded with
    fell_back: bool = False  # a hardware encoder failed and the CPU took over
    settings: list[EncodeSettings] = field(default_factory=list)  # as encoded (a size cap may have set a bitrate)


@dataclass
class _Batch:
    """The targets of a clip that neither the cache nor a stream copy served: one FFmpeg process."""

    source: MediaInfo
    clip: Clip
    settings: list[EncodeSettings]  # every target of the clip; `todo` indexes the ones this batch encodes
    finals: list[Path]
    todo: list[int]
    on_progress: Callable[[Progress], None] | None
    timeout: float | None

    @property
    def where(self) -> str:
        return f"clip {self.clip.clip_id}" if self.clip.clip_id else "timeline"

    @property
    def partials(self) -> list[Path]:
        return [partial_path(self.finals[i]) for i in self.todo]

    def passlogs(self) -> dict[int, str]:
        return {
            n: str(partial_path(self.finals[i]).with_suffix(".pass"))
            for n, i in enumerate(self.todo)
            if self.settings[i].video_bitrate and self.settings[i].video_codec in TWO_PASS
        }

    def command(self, passlogs: dict[int, str], **extra) -> list[str]:
        return build_clip_command(
            ffmpeg_exe(),
            Path(self.source.path),
            self.clip,
            [self.settings[i] for i in self.todo],
            self.partials,
            source_has_audio=self.source.has_audio,
            passlogs=passlogs,
            source_size=_size(self.source),
            stream_starts=_starts(self.source),
            downmix=surround(self.source),
            **extra,
        )

    def run(self, argv: list[str], outputs: list[Path] | None = None, where: str | None = None) -> RunResult:
        return run_ffmpeg(
            argv,
            duration=self.clip.duration,
            outputs=outputs or (),
            on_progress=self.on_progress,
            timeout=self.timeout,
            where=where or self.where,
        )

    def encode(self, plan) -> tuple[list[str], float, bool]:
        """(argv, FFmpeg wall time, fell back to the CPU); `settings` hold the encoders used."""
        passlogs, wall, fell_back = self.passlogs(), 0.0, False
        try:
            if passlogs:  # bitrate targets: an analysis pass first, for all of them in one process
                first = self.run(self.command(passlogs, first_pass=True), where=f"{self.where} (pass 1)")
                wall += first.wall_s
                _name_pass_logs(passlogs, [self.settings[i] for i in self.todo], self.source.has_audio)
            argv = self.command(passlogs, loudness=plan)
            try:
                run = self.run(argv, self.partials)
            except EncodeError as exc:
                if all(s.encoder == CPU_ENCODERS[s.video_codec] for s in self.settings):
                    raise
                # a hardware encoder failed mid-job: the same clip again on the CPU encoders
                log.warning("%s: hardware encode failed (%s); falling back to the CPU", self.where, exc)
                self.settings = [replace(s, encoder=CPU_ENCODERS[s.video_codec]) for s in self.settings]
                argv = self.command(passlogs, loudness=plan)
                run, fell_back = self.run(argv, self.partials), True
            return argv, wall + run.wall_s, fell_back
        finally:
            for prefix in passlogs.values():
                for leftover in Path(prefix).parent.glob(Path(prefix).name + "*"):
                    leftover.unlink(missing_ok=True)

    def place(self, keys: list[str | None], cache: RenditionCache | None) -> None:
        """The finished files under their final names, each stored in the cache when it has a key."""
        for i, part in zip(self.todo, self.partials):
            os.replace(part, self.finals[i])
            if keys[i]:
                cache.store(keys[i], self.settings[i].ext, self.finals[i])


def surround(source: MediaInfo) -> bool:
    """More than two channels: downmixed to stereo in the filter graph, before loudness."""
    return bool(source.audio and source.audio.channels > 2)


def render_clip(
    source: MediaInfo,
    clip: Clip,
    settings: list[EncodeSettings],
    finals: list[Path],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    timeout: float | None = None,
    loudness: tuple[float, float] | None = None,
    cache: RenditionCache | None = None,
    source_sha256: str | None = None,
) -> ClipRender:
    """Encode `clip` to every target not already in the cache, in one FFmpeg process; files appear
    under their final names only when all are done."""
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    settings = [fit_size_cap(s, clip.duration) for s in settings]
    keyed = bool(cache and source_sha256)
    keys = [rendition_key(source_sha256, clip, s, loudness) if keyed else None for s in settings]
    plan = _loudness_plan(source, clip, loudness, [k and cache.path(k, s.ext) for k, s in zip(keys, settings)])
    cached = [bool(k and cache.fetch(k, s.ext, f)) for k, s, f in zip(keys, settings, finals)]
    copies = [i for i, hit in enumerate(cached) if not hit and can_copy(source, clip, settings[i])]
    todo = [i for i, hit in enumerate(cached) if not hit and i not in copies]
    argv, wall = _copy_targets(source, clip, [(settings[i], finals[i], keys[i]) for i in copies], cache, plan, timeout)
    fell_back = False
    if todo:
        batch = _Batch(source, clip, settings, finals, todo, on_progress, timeout)
        argv, batch_wall, fell_back = batch.encode(plan)
        wall += batch_wall
        if fell_back:  # the files are CPU encodes now: cache them under the CPU settings' keys
            settings = batch.settings
            keys = [rendition_key(source_sha256, clip, s, loudness) if k else None for k, s in zip(keys, settings)]
        batch.place(keys, cache)
    return ClipRender(
        clip,
        finals,
        argv,
        wall,
        cached,
        copied=[i in copies for i in range(len(settings))],
        loudness=plan.to_dict() if plan else None,
        encoders=[s.encoder for s in settings],
        fell_back=fell_back,
        settings=settings,
    )


def _loudness_plan(
    source: MediaInfo, clip: Clip, loudness: tuple[float, float] | None, cached: list[Path | None]
) -> loud.LoudnessPlan | None:
    """Loudness pass 1 on the clip's audio, unless every target's file is already in the cache."""
    if not (loudness and source.has_audio) or all(p and p.exists() for p in cached):
        return None
    audio = clip_audio(Path(source.path), clip, downmix=surround(source), track=source.audio_index)
    return loud.measure(audio, *loudness)


def _copy_targets(
    source: MediaInfo,
    clip: Clip,
    targets: list[tuple[EncodeSettings, Path, str | None]],
    cache: RenditionCache | None,
    plan: loud.LoudnessPlan | None,
    timeout: float | None,
) -> tuple[list[str], float]:
    """The stream-copy fast path for each (settings, final path, cache key); (first argv, wall time)."""
    argv: list[str] = []
    wall = 0.0
    for s, final, key in targets:
        run = _copy(source, clip, s, final, plan, timeout)
        argv, wall = argv or run.argv, wall + run.wall_s
        if key:
            cache.store(key, s.ext, final)
    return argv, wall


def _name_pass_logs(passlogs: dict[int, str], batch: list[EncodeSettings], source_has_audio: bool) -> None:
    """Pass 1 (video only) wrote `prefix-n.log`; pass 2 reads `prefix-<stream index among all outputs>.log`."""
    for n, (k, prefix) in enumerate(sorted(passlogs.items())):
        index = pass_log_index(batch, k, source_has_audio)
        for suffix in (".log", ".log.mbtree"):
            made = Path(f"{prefix}-{n}{suffix}")
            if made.exists() and n != index:
                os.replace(made, f"{prefix}-{index}{suffix}")


def _copy(source: MediaInfo, clip: Clip, s: EncodeSettings, final: Path, loudness, timeout) -> RunResult:
    """Run the stream-copy fast path into `final` (via a partial file); pieces are removed afterwards."""
    work = final.parent / f".{final.stem}.pieces"
    work.mkdir(parents=True, exist_ok=True)
    pieces = [work / f"{k}.mp4" for k in range(len(clip.ranges))]
    try:
        cut = build_cut_command(ffmpeg_exe(), Path(source.path), clip, source.video.rate, pieces)
        first = run_ffmpeg(cut, duration=clip.duration, outputs=pieces, timeout=timeout, where="stream copy")
        second = join_pieces(source, clip, s, pieces, final, loudness, timeout, copied=True)
        return RunResult(first.wall_s + second.wall_s, second.stderr_tail, cut + ["&&"] + second.argv)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def join_pieces(
    source: MediaInfo,
    clip: Clip,
    s: EncodeSettings,
    pieces: list[Path],
    final: Path,
    loudness,
    timeout,
    copied: bool = False,
) -> RunResult:
    """Join video pieces into `final` without re-encoding them; the audio comes from the source. `copied`: the
    pieces are the source's own stream (untagged colour gets its BT.709 tags), not encoded chunks."""
    list_file = final.parent / f".{final.stem}.pieces.txt"
    list_file.write_text("".join("file '" + str(p).replace("'", "'\\''") + "'\n" for p in pieces))
    part = partial_path(final)
    try:
        argv = build_join_command(
            ffmpeg_exe(),
            Path(source.path),
            clip,
            s,
            list_file,
            part,
            source_has_audio=source.has_audio,
            loudness=loudness,
            downmix=surround(source),
            bsf=retag(source) if copied else None,
        )
        run = run_ffmpeg(argv, duration=clip.duration, outputs=[part], timeout=timeout, where="join")
        os.replace(part, final)
        return run
    finally:
        list_file.unlink(missing_ok=True)
