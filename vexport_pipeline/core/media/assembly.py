"""The last step of `renditions`: chunks joined without re-encoding, every file probed and described."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from vexport_pipeline.core.files import sha256_file
from vexport_pipeline.core.media import loudness as loud
from vexport_pipeline.core.media.commands import clip_audio
from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.media.render import join_pieces, surround
from vexport_pipeline.core.media.timeline import Clip, Timeline
from vexport_pipeline.core.records import Encoded, EncodeResult, ExportSource, Rendition
from vexport_pipeline.core.spec.presets import EncodeSettings


def final_path(out_dir: Path, clip_id: str | None, label: str, s: EncodeSettings) -> Path:
    return (out_dir / clip_id if clip_id else out_dir) / f"{label}.{s.ext}"


def chunk_path(out_dir: Path, clip_index: int, label: str, chunk_index: int, s: EncodeSettings) -> Path:
    return out_dir / ".chunks" / f"c{clip_index}" / label / f"{chunk_index:05d}.{s.ext}"


def _by_target(results: list[EncodeResult]) -> tuple[dict, dict]:
    """(clip, target) -> the finished output, and (clip, target) -> the chunks in order."""
    whole: dict[tuple[int, int], Encoded] = {}
    chunks: dict[tuple[int, int], list[Encoded]] = {}
    for r in sorted(results, key=lambda r: (r.task.job.clip_index, r.task.job.chunk_index or 0)):
        job = r.task.job
        for out in r.outputs:
            key = (job.clip_index, out.target_index)
            if job.chunk_index is None:
                whole[key] = out
            else:
                chunks.setdefault(key, []).append(out)
    return whole, chunks


def _join(
    source: ExportSource,
    clip: Clip,
    label: str,
    s: EncodeSettings,
    pieces: list[Encoded],
    measured,
    out_dir: Path,
    timeout: float,
) -> Encoded:
    final = final_path(out_dir, clip.clip_id, label, s)
    run = join_pieces(source.info, clip, s, [p.path for p in pieces], final, measured, timeout)
    first = pieces[0]
    return Encoded(
        first.target_index,
        final,
        cached=False,
        copied=False,
        encoder=first.encoder,
        settings=replace(s, encoder=first.encoder),
        wall_s=sum(p.wall_s for p in pieces) + run.wall_s,
        loudness=measured.to_dict() if measured else None,
    )


def describe(source: ExportSource, clip: Clip, label: str, out: Encoded, chunks: int) -> Rendition:
    got = probe(out.path, where=str(out.path))
    s = out.settings
    return Rendition(
        target=label,
        clip_id=clip.clip_id,
        path=out.path,
        container=s.container,
        video_codec=s.video_codec,
        audio_codec=s.audio_codec if got.audio else None,
        width=got.video.display_width,
        height=got.video.display_height,
        fps=got.video.fps,
        duration=got.duration,
        size_bytes=got.size_bytes,
        sha256=sha256_file(out.path),
        encoder="copy" if out.copied else out.encoder,
        wall_s=round(out.wall_s, 3),
        cached=out.cached,
        chunks=chunks,
        expected_duration=clip.duration,
        source_has_audio=source.info.has_audio,
        settings=s,
        loudness_pass1=out.loudness,
    )


def assemble(
    source: ExportSource, timeline: Timeline, results: list[EncodeResult], out_dir: Path, timeout: float
) -> list[Rendition]:
    """Every rendition of the export, clip by clip and target by target (the contract's order)."""
    plan = results[0].task.plan  # the targets exactly as planned (hardware encoder included)
    whole, chunks = _by_target(results)
    measured: dict = {}  # loudness pass 1, once per clip whatever the number of chunked targets
    for (ci, i), pieces in chunks.items():  # chunked targets: join their pieces, audio from the source once
        clip = timeline.clips[ci]
        if source.loudness and source.info.has_audio and ci not in measured:
            audio = clip_audio(
                Path(source.info.path), clip, downmix=surround(source.info), track=source.info.audio_index
            )
            measured[ci] = loud.measure(audio, *source.loudness)
        whole[(ci, i)] = _join(
            source, clip, plan.labels[i], plan.targets[i], pieces, measured.get(ci), out_dir, timeout
        )
    shutil.rmtree(out_dir / ".chunks", ignore_errors=True)
    return [
        describe(source, clip, plan.labels[i], whole[(ci, i)], len(chunks.get((ci, i), ())) or 1)
        for ci, clip in enumerate(timeline.clips)
        for i in range(len(plan.targets))
    ]
