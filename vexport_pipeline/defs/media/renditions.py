"""renditions: planned as encode jobs (whole clips, or keyframe-aligned chunks of long clips) that run
as separate steps in the `gpu` pool, so one export can use many workers; then assembled."""

import shutil
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg

from vexport_pipeline.core.media import loudness as loud
from vexport_pipeline.core.media.cache import RenditionCache
from vexport_pipeline.core.media.chunks import EncodeJob, chunk_settings, plan_jobs
from vexport_pipeline.core.media.commands import clip_audio
from vexport_pipeline.core.media.probe import MediaInfo, keyframe_times, probe
from vexport_pipeline.core.media.render import can_copy, join_pieces, render_clip, sha256_file
from vexport_pipeline.core.media.runner import Progress
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.spec.composition import parse_composition
from vexport_pipeline.core.spec.presets import EncodeSettings, PresetBook, unique_labels
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import EncoderResource, VexportResource

PROGRESS_EVERY_S = 5.0
ASSET = dg.AssetKey("renditions")


def _reporter(context, what: str):
    last = [0.0]

    def report(p: Progress) -> None:
        now = time.monotonic()
        if not p.done and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        eta = f"{p.eta:.0f} s" if p.eta is not None else "?"
        context.log.info(f"{what}: {p.percent:.0f}% at {p.fps:.1f} fps, {p.speed:.2f}x, ETA {eta}")
        context.log_event(
            dg.AssetObservation(
                asset_key=ASSET,
                partition=context.partition_key,
                metadata={
                    "job": what,
                    "percent": p.percent,
                    "fps": p.fps,
                    "speed": p.speed,
                    "eta_s": p.eta if p.eta is not None else -1.0,
                },
            )
        )

    return report


def _loudness(comp):
    return (comp.audio.target_lufs, comp.audio.true_peak) if comp.audio and comp.audio.normalize else None


def _out_dir(vexport: VexportResource, export_id: str) -> Path:
    return vexport.paths.work / export_id / "renditions"


def _final(out_dir: Path, clip_id, label: str, s: EncodeSettings) -> Path:
    return (out_dir / clip_id if clip_id else out_dir) / f"{label}.{s.ext}"


@dg.op(out=dg.DynamicOut(dict), description="Resolve every target and split the timeline into encode jobs.")
def plan_encodes(context: dg.OpExecutionContext, encoders: EncoderResource, source: dict, segments: dict):
    comp = parse_composition(source["composition"])
    info = MediaInfo.from_dict(source["info"])
    timeline = Timeline.from_dict(segments)
    settings = [PresetBook.load().resolve(t, info, f"targets[{i}]") for i, t in enumerate(comp.targets)]
    settings, hardware = encoders.choose(settings)
    context.log.info(f"encoders: {hardware['hardware']}")
    chunk_s = encoders.chunk_seconds or None
    jobs = plan_jobs(
        timeline,
        settings,
        info,
        keyframe_times(info.path) if chunk_s else [],
        chunk_s,
        copyable=lambda s, clip: can_copy(info, clip, s),
    )
    context.log.info(f"{len(jobs)} encode job(s): " + ", ".join(j.key for j in jobs))
    plan = {
        "settings": [s.to_dict() for s in settings],
        "labels": unique_labels(settings),
        "hardware": hardware["hardware"],
        "jobs": len(jobs),
    }
    for job in jobs:
        yield dg.DynamicOutput({**plan, "job": job.to_dict()}, mapping_key=job.key)


@dg.op(
    pool="gpu", description="One encode job: a whole clip to all of its targets in one FFmpeg process, or one chunk."
)
def encode(context: dg.OpExecutionContext, vexport: VexportResource, source: dict, task: dict) -> dict:
    comp = parse_composition(source["composition"])
    info = MediaInfo.from_dict(source["info"])
    job = EncodeJob.from_dict(task["job"])
    settings = [EncodeSettings.from_dict(task["settings"][i]) for i in job.targets]
    labels = [task["labels"][i] for i in job.targets]
    out_dir = _out_dir(vexport, comp.id)
    if job.chunk_index is None:
        finals = [_final(out_dir, job.clip.clip_id, label, s) for label, s in zip(labels, settings)]
        done = render_clip(
            info,
            job.clip,
            settings,
            finals,
            on_progress=_reporter(context, job.key),
            timeout=vexport.encode_timeout_s,
            loudness=_loudness(comp),
            cache=RenditionCache(vexport.paths.cache),
            source_sha256=source["sha256"],
        )
    else:
        settings = [chunk_settings(s) for s in settings]
        finals = [
            out_dir / ".chunks" / f"c{job.clip_index}" / label / f"{job.chunk_index:05d}.{s.ext}"
            for label, s in zip(labels, settings)
        ]
        done = render_clip(
            info, job.clip, settings, finals, on_progress=_reporter(context, job.key), timeout=vexport.encode_timeout_s
        )
    context.log.info(
        f"{job.key}: {len(finals) - sum(done.cached)} encoded in {done.wall_s:.1f} s, {sum(done.cached)} from the cache"
    )
    return {
        "job": task["job"],
        "paths": [str(p) for p in finals],
        "cached": done.cached,
        "copied": done.copied,
        "encoders": done.encoders,
        "settings": [s.to_dict() for s in done.settings],
        "wall_s": done.wall_s,
        "loudness": done.loudness,
        "hardware": task["hardware"],
        "plan": {"settings": task["settings"], "labels": task["labels"]},
    }


@dg.op(description="Join chunks without re-encoding, probe every rendition and describe it.")
def assemble(
    context: dg.OpExecutionContext, vexport: VexportResource, source: dict, segments: dict, results: list
) -> dg.Output[list]:
    comp = parse_composition(source["composition"])
    info = MediaInfo.from_dict(source["info"])
    timeline = Timeline.from_dict(segments)
    out_dir = _out_dir(vexport, comp.id)
    by_target: dict[tuple[int, int], dict] = {}
    chunks: dict[tuple[int, int], list] = {}
    for r in sorted(results, key=lambda r: (r["job"]["clip_index"], r["job"]["chunk_index"] or 0)):
        job = EncodeJob.from_dict(r["job"])
        for n, i in enumerate(job.targets):
            item = {
                k: (r[k][n] if isinstance(r[k], list) else r[k])
                for k in ("paths", "cached", "copied", "encoders", "settings")
            }
            item.update(wall_s=r["wall_s"], loudness=r["loudness"])
            if job.chunk_index is None:
                by_target[(job.clip_index, i)] = item
            else:
                chunks.setdefault((job.clip_index, i), []).append(item)
    # the targets exactly as plan_encodes resolved them (hardware encoder included): every job carries the plan
    plan = results[0]["plan"]
    labels, planned = plan["labels"], [EncodeSettings.from_dict(d) for d in plan["settings"]]
    level = _loudness(comp)
    measured: dict = {}  # loudness pass 1, once per clip whatever the number of chunked targets
    for (ci, i), items in chunks.items():  # chunked targets: join their pieces, audio from the source once
        clip, s = timeline.clips[ci], planned[i]
        if level and info.has_audio and ci not in measured:
            measured[ci] = loud.measure(clip_audio(Path(info.path), clip), *level)
        final = _final(out_dir, clip.clip_id, labels[i], s)
        run = join_pieces(
            info, clip, s, [Path(x["paths"]) for x in items], final, measured.get(ci), vexport.encode_timeout_s
        )
        by_target[(ci, i)] = {
            "paths": str(final),
            "cached": False,
            "copied": False,
            "encoders": items[0]["encoders"],
            "settings": replace(s, encoder=items[0]["encoders"]).to_dict(),
            "wall_s": sum(x["wall_s"] for x in items) + run.wall_s,
            "loudness": measured[ci].to_dict() if ci in measured else None,
            "chunks": len(items),
        }
    shutil.rmtree(out_dir / ".chunks", ignore_errors=True)
    out = []
    for ci, clip in enumerate(timeline.clips):
        for i in range(len(planned)):
            item = by_target[(ci, i)]
            s = EncodeSettings.from_dict(item["settings"])
            path = Path(item["paths"])
            got = probe(path, where=str(path))
            out.append(
                {
                    "target": labels[i],
                    "clip_id": clip.clip_id,
                    "path": str(path),
                    "container": s.container,
                    "video_codec": s.video_codec,
                    "audio_codec": s.audio_codec if got.audio else None,
                    "width": got.video.display_width,
                    "height": got.video.display_height,
                    "fps": got.video.fps,
                    "duration": got.duration,
                    "size_bytes": got.size_bytes,
                    "sha256": sha256_file(path),
                    "encoder": "copy" if item["copied"] else item["encoders"],
                    "wall_s": round(item["wall_s"], 3),
                    "cached": item["cached"],
                    "chunks": item.get("chunks", 1),
                    "loudness_pass1": item["loudness"],
                    "expected_duration": clip.duration,
                    "source_has_audio": info.has_audio,
                    "settings": s.to_dict(),
                }
            )
    table = "\n".join(
        f"| {r['clip_id'] or '-'} | {r['target']} | {r['container']} | {r['video_codec']}/{r['audio_codec'] or '-'} | "
        f"{r['width']}x{r['height']} | {r['fps']} | {r['duration']:.3f} | {r['size_bytes']:,} | {r['encoder']} | "
        f"{'cache' if r['cached'] else r['chunks']} |"
        for r in out
    )
    return dg.Output(
        out,
        metadata={
            "renditions": len(out),
            "total_bytes": sum(r["size_bytes"] for r in out),
            "encode_wall_s": round(sum(r["wall_s"] for r in out), 2),
            "encode_jobs": len(results),
            "cache_hits": sum(r["cached"] for r in out),
            "stream_copied": sum(r["encoder"] == "copy" for r in out),
            "encoders": ", ".join(sorted({r["encoder"] for r in out})),
            "hardware_detection": results[0].get("hardware", "") if results else "",
            "loudness": ", ".join(
                f"{r['clip_id'] or 'timeline'}: {r['loudness_pass1']['measured_i']} -> {r['loudness_pass1']['target_i']} LUFS "
                f"({r['loudness_pass1']['mode']})"
                for r in out
                if r["loudness_pass1"]
            )
            or "not normalized",
            "table": dg.MetadataValue.md(
                "| clip | target | container | codecs | size | fps | duration | bytes | encoder | chunks/cache |\n"
                "|---|---|---|---|---|---|---|---|---|---|\n" + table
            ),
        },
    )


@dg.graph_asset(
    partitions_def=exports,
    group_name="export",
    kinds={"ffmpeg"},
    description="The encodes: each clip decoded once for all its targets; long clips in parallel chunks.",
)
def renditions(source: dict, segments: dict):
    tasks = plan_encodes(source, segments)
    results = tasks.map(lambda task: encode(source, task)).collect()
    return assemble(source, segments, results)
