"""Validation of a whole export: every rendition checked against its target, its platform, the
source's timeline and the owner's brand rules; the optional real-client playback step."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from vexport_pipeline.core.errors import VexportError
from vexport_pipeline.core.media.runner import stop_started_by
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.records import Checked, ExportSource, Rendition
from vexport_pipeline.core.validation.checks import check_file, load_brands
from vexport_pipeline.core.validation.retry import improve
from vexport_pipeline.core.validation.verdict import Issue, verdict
from vexport_pipeline.core.validation.vmaf import Scores, score_clip, stride


def loudness_target(source: ExportSource, brand: dict) -> tuple[float, float] | None:
    """The composition's normalization target, or the level the owner's brand requires (checked even
    when the composition did not ask for normalization)."""
    target = source.loudness
    if brand.get("loudness_lufs") is not None:
        target = (float(brand["loudness_lufs"]), target[1] if target else -1.0)
    return target


def validate_export(
    source: ExportSource, timeline: Timeline, renditions: list[Rendition], kept: Scores | None = None
) -> list[Checked]:
    """Every rendition checked; one under its quality floor is re-encoded alone (the closed loop). `kept`: scores
    measured before (by the target-quality search) are taken from there."""
    comp = source.composition
    brand = load_brands().get(comp.owner, {}) if comp.owner else {}
    loudness = loudness_target(source, brand)
    clips = {c.clip_id: c for c in timeline.clips}

    scores = score_by_clip(source, clips, renditions, comp.validation.quality, kept)

    def check(r: Rendition) -> Checked:
        report = check_file(
            r.path,
            r.settings,
            expected_duration=r.expected_duration,
            source_has_audio=r.source_has_audio,
            source_av_offset_ms=source.av_offset_ms,
            loudness_target=loudness,
            reference=(source.info, clips[r.clip_id]),
            quality=comp.validation.quality,
            scored=scores.get(r.path),
            brand=brand,
        )
        return Checked(r.target, r.clip_id, report)

    out = []
    for r, c in zip(renditions, in_parallel(check, renditions)):
        if c.status == "fail":
            _, c = improve(source, timeline, r, c, check, brand.get("min_vmaf"))
        out.append(c)
    return out


def score_by_clip(
    source: ExportSource, clips: dict, renditions: list[Rendition], quality: str, kept: Scores | None = None
) -> dict[Path, dict]:
    """VMAF/PSNR/SSIM of every rendition, one FFmpeg pass per clip over one decode of its source timeline, except
    those `kept` already holds (measured on as many frames or more). A clip whose pass fails (a rendition it cannot
    read) is left out: its checks then score each file alone and report what is wrong with it."""
    if quality == "off":
        return {}
    known: dict[Path, dict] = {}
    by_clip: dict = {}
    for r in renditions:
        sub = 1 if quality == "full" else stride(clips[r.clip_id], r.settings)
        if kept and (q := kept.recall(r.sha256, clips[r.clip_id], r.settings, sub)):
            known[r.path] = q
        else:
            by_clip.setdefault(r.clip_id, []).append(r)

    def one(group: list[Rendition]) -> dict[Path, dict]:
        try:
            found = score_clip(
                [(r.path, r.settings) for r in group], source.info, clips[group[0].clip_id], full=quality == "full"
            )
        except VexportError:
            return {}
        return {r.path: q for r, q in zip(group, found)}

    return known | {path: q for part in in_parallel(one, by_clip.values()) for path, q in part.items()}


def in_parallel(fn: Callable, items: Iterable) -> list:
    """`fn` over `items`, as many at a time as there are cores (each check is mostly one FFmpeg process
    whose filters run with few threads, so one at a time leaves cores idle). In order; the first error
    raises after the others finished, and each check stops its own FFmpeg if it is interrupted."""
    items = list(items)
    workers = max(1, min(len(items), os.cpu_count() or 1))
    if workers == 1:
        return [fn(x) for x in items]
    prefix = f"vexport-check-{id(items):x}"
    pool = ThreadPoolExecutor(workers, thread_name_prefix=prefix)
    try:
        return list(pool.map(fn, items))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_started_by(prefix)
        raise
    finally:
        pool.shutdown(wait=True)


def with_playback(renditions: list[Rendition], checked: list[Checked]) -> tuple[list[Checked], list[str]]:
    """Each web rendition played in headless Chromium; what a browser could not play is an error.
    Returns the updated reports and one log line per file played."""
    from vexport_pipeline.core.validation.playback import WEB_CODECS, play, playback_issues

    renditions = [c.rendition or r for r, c in zip(renditions, checked)]
    web = [n for n, r in enumerate(renditions) if (r.container, r.video_codec) in WEB_CODECS]
    seen_all = play([renditions[n].path for n in web])
    out, lines = list(checked), []
    for n, seen in zip(web, seen_all):
        r, report = renditions[n], checked[n].report
        found = playback_issues(seen, r.width, r.height, r.duration, 1 / r.fps)
        hint = "re-encode with the target's web-safe defaults"
        issues = report.issues + [Issue("error", code, msg, hint) for code, msg in found]
        status, score = verdict(issues)
        measurements = {**report.measurements, "playback": seen}
        report = replace(report, issues=issues, status=status, score=score, measurements=measurements)
        out[n] = replace(checked[n], report=report)
        lines.append(f"playback {r.label}: {found or 'ok'}")
    return out, lines
