"""renditions: planned as encode jobs (whole clips, or keyframe-aligned chunks of long clips) that run
as separate steps in the `gpu` pool, so one export can use many workers; then assembled. A job that uses a
hardware encoder runs as a `gpu_encode` step, which Celery sends to the `gpu` queue (workers with an encoder);
every other step goes to the `cpu` queue (defs/placement.py)."""

import time
from pathlib import Path

import dagster as dg

from vexport_pipeline.core.media.assembly import assemble as assemble_renditions
from vexport_pipeline.core.media.assembly import chunk_path, final_path
from vexport_pipeline.core.media.chunks import EncodeJob, chunk_settings, plan_jobs
from vexport_pipeline.core.media.hardware import CANDIDATES
from vexport_pipeline.core.media.probe import keyframe_times
from vexport_pipeline.core.media.render import can_copy, render_clip
from vexport_pipeline.core.media.runner import Progress
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.media.tuning import tune_all
from vexport_pipeline.core.records import Encoded, EncodePlan, EncodeResult, EncodeTask, ExportSource, Rendition
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs import progress
from vexport_pipeline.defs.failures import reported
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.placement import CPU, GPU, step_tags
from vexport_pipeline.defs.resources import EncoderResource, HomeResource

PROGRESS_EVERY_S = 5.0
ASSET = dg.AssetKey("renditions")
HARDWARE_ENCODERS = {name for names in CANDIDATES.values() for name in names}


def _reporter(context, what: str):
    last = [0.0]

    def report(p: Progress) -> None:
        now = time.monotonic()
        if not p.done and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        eta = f"{p.eta:.0f} s" if p.eta is not None else "?"
        context.log.info(f"{what}: {p.percent:.0f}% at {p.fps:.1f} fps, {p.speed:.2f}x, ETA {eta}")
        metadata = {"job": what, "percent": p.percent, "fps": p.fps, "speed": p.speed, "eta_s": p.eta or -1.0}
        context.log_event(dg.AssetObservation(asset_key=ASSET, partition=context.partition_key, metadata=metadata))
        progress.publish(context)  # the run's tags: the UI's runs list shows the percent move

    return report


def _out_dir(home: HomeResource, export_id: str) -> Path:
    return home.paths.work / export_id / "renditions"


def _tune(context, home: HomeResource, source: ExportSource, timeline: Timeline, targets: list) -> tuple[list, tuple]:
    """Target quality: the CRF of each target found on samples of this export (cached by content)."""
    out, report = [], []
    found = tune_all(source.info, timeline, targets, cache=home.rendition_cache(), source_sha256=source.sha256)
    for label, s, tuned in zip(source.labels, targets, found):
        out.append(tuned.settings)
        if tuned.trials:
            report.append({**tuned.to_dict(), "label": label})
            trials = ", ".join(f"crf {t.crf}: VMAF {t.vmaf}" for t in tuned.trials)
            context.log.info(f"{label}: target VMAF {s.vmaf_target:g} -> crf {tuned.settings.crf} ({trials})")
    return out, tuple(report)


def job_kind(plan: EncodePlan, job: EncodeJob) -> str:
    """`gpu` when one of the job's targets uses a hardware encoder (its one FFmpeg process needs the device)."""
    return GPU if any(plan.targets[i].encoder in HARDWARE_ENCODERS for i in job.targets) else CPU


# Two outputs, as Celery routes by the step's tags: a job's queue is known once its encoders are chosen. An output
# that yields nothing gives its collect an empty list (both are required, so Dagster does not skip `assemble`).
@dg.op(
    out={"tasks": dg.DynamicOut(EncodeTask), "gpu_tasks": dg.DynamicOut(EncodeTask)},
    tags=step_tags(CPU),
    description="Choose encoders and CRFs (target quality), split into encode jobs.",
)
def plan_encodes(
    context: dg.OpExecutionContext,
    home: HomeResource,
    encoders: EncoderResource,
    source: ExportSource,
    segments: Timeline,
):
    with reported():
        targets, hardware = encoders.choose(list(source.targets))
        context.log.info(f"encoders: {hardware}")
        targets, tuning = _tune(context, home, source, segments, targets)
        info, chunk_s = source.info, encoders.chunk_seconds or None
        jobs = plan_jobs(
            segments,
            targets,
            info,
            keyframe_times(info.path) if chunk_s else [],
            chunk_s,
            copyable=lambda s, clip: can_copy(info, clip, s),
        )
    context.log.info(f"{len(jobs)} encode job(s): " + ", ".join(j.key for j in jobs))
    progress.publish(context, "encoding", "renditions")
    plan = EncodePlan(tuple(targets), source.labels, hardware, tuning)
    for job in jobs:
        output = "gpu_tasks" if job_kind(plan, job) == GPU else "tasks"
        yield dg.DynamicOutput(EncodeTask(plan, job), output_name=output, mapping_key=job.key)


@dg.op(
    pool="gpu",
    tags=step_tags(CPU),
    description="One encode job: a whole clip to all of its targets in one FFmpeg process, or a chunk.",
)
def encode(
    context: dg.OpExecutionContext,
    home: HomeResource,
    encoders: EncoderResource,
    source: ExportSource,
    task: EncodeTask,
) -> EncodeResult:
    job, out_dir = task.job, _out_dir(home, source.export_id)
    settings = [task.plan.targets[i] for i in job.targets]
    labels = [task.plan.labels[i] for i in job.targets]
    progress = _reporter(context, job.key)
    with reported():
        if job.chunk_index is None:
            finals = [final_path(out_dir, job.clip.clip_id, label, s) for label, s in zip(labels, settings)]
            done = render_clip(
                source.info,
                job.clip,
                settings,
                finals,
                on_progress=progress,
                timeout=encoders.timeout_s,
                loudness=source.loudness,
                cache=home.rendition_cache(),
                source_sha256=source.sha256,
            )
        else:
            settings = [chunk_settings(s, encoders.repeatable_chunks) for s in settings]
            finals = [chunk_path(out_dir, job.clip_index, lb, job.chunk_index, s) for lb, s in zip(labels, settings)]
            done = render_clip(
                source.info, job.clip, settings, finals, on_progress=progress, timeout=encoders.timeout_s
            )
    hits = sum(done.cached)
    context.log.info(f"{job.key}: {len(finals) - hits} encoded in {done.wall_s:.1f} s, {hits} from the cache")
    outputs = tuple(
        Encoded(
            i,
            path,
            cached,
            bool(done.copied and done.copied[n]),
            done.encoders[n],
            done.settings[n],
            done.wall_s,
            done.loudness,
        )
        for n, (i, path, cached) in enumerate(zip(job.targets, finals, done.cached))
    )
    return EncodeResult(task, outputs)


def _metadata(out: list[Rendition], results: list[EncodeResult]) -> dict:
    rows = [
        (
            r.clip_id,
            r.target,
            r.container,
            f"{r.video_codec}/{r.audio_codec or '-'}",
            f"{r.width}x{r.height}",
            r.fps,
            f"{r.duration:.3f}",
            f"{r.size_bytes:,}",
            r.encoder,
            "cache" if r.cached else r.chunks,
        )
        for r in out
    ]
    loudness = [
        f"{r.clip_id or 'timeline'}: {p['measured_i']} -> {p['target_i']} LUFS ({p['mode']})"
        for r in out
        if (p := r.loudness_pass1)
    ]
    headers = ["clip", "target", "container", "codecs", "size", "fps", "duration", "bytes", "encoder", "chunks/cache"]
    return {
        "renditions": len(out),
        "total_bytes": sum(r.size_bytes for r in out),
        "encode_wall_s": round(sum(r.wall_s for r in out), 2),
        "encode_jobs": len(results),
        "cache_hits": sum(r.cached for r in out),
        "stream_copied": sum(r.encoder == "copy" for r in out),
        "encoders": ", ".join(sorted({r.encoder for r in out})),
        "hardware_detection": results[0].task.plan.hardware if results else "",
        "loudness": ", ".join(loudness) or "not normalized",
        "target_quality": dg.MetadataValue.md(_tuning_table(results[0].task.plan.tuning if results else ())),
        "table": dg.MetadataValue.md(md_table(headers, rows)),
    }


def _tuning_table(tuning: tuple[dict, ...]) -> str:
    rows = [
        (
            t["label"],
            t["target"],
            t["crf"],
            "; ".join(f"crf {x['crf']}: {x['vmaf']} @ {x['kbps']} kb/s" for x in t["trials"]),
            "cache" if t["cached"] else "searched",
        )
        for t in tuning
    ]
    return md_table(["target", "VMAF target", "CRF chosen", "probes (VMAF, bitrate)", "search"], rows) if rows else "-"


@dg.op(tags=step_tags(CPU), description="Join chunks without re-encoding, probe every rendition and describe it.")
def assemble(
    home: HomeResource,
    encoders: EncoderResource,
    source: ExportSource,
    segments: Timeline,
    results: list[EncodeResult],
    gpu_results: list[EncodeResult],
) -> dg.Output[list[Rendition]]:
    results = [*results, *gpu_results]
    with reported():
        out = assemble_renditions(source, segments, results, _out_dir(home, source.export_id), encoders.timeout_s)
    return dg.Output(out, metadata=_metadata(out, results))


@dg.graph_asset(
    partitions_def=exports,
    group_name="export",
    kinds={"ffmpeg"},
    description="The encodes: each clip decoded once for all its targets; long clips in parallel chunks.",
)
def renditions(source: ExportSource, segments: Timeline):
    tasks, gpu_tasks = plan_encodes(source, segments)
    results = tasks.map(lambda task: encode(source, task)).collect()
    gpu_encode = encode.alias("gpu_encode").tag(step_tags(GPU))
    gpu_results = gpu_tasks.map(lambda task: gpu_encode(source, task)).collect()
    return assemble(source, segments, results, gpu_results)
