import time
from pathlib import Path

import dagster as dg

from ..core.manifest import parse_composition
from ..core.cache import RenditionCache
from ..core.presets import PresetBook, unique_labels
from ..core.probe import MediaInfo, probe
from ..core.render import render_clip, sha256_file
from ..core.runner import Progress
from ..core.timeline import Timeline
from ..partitions import exports
from ..resources import EncoderResource, VexportResource

PROGRESS_EVERY_S = 5.0


def _reporter(context: dg.AssetExecutionContext, what: str):
    last = [0.0]

    def report(p: Progress) -> None:
        now = time.monotonic()
        if not p.done and now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        eta = f"{p.eta:.0f} s" if p.eta is not None else "?"
        context.log.info(f"{what}: {p.percent:.0f}% at {p.fps:.1f} fps, {p.speed:.2f}x, ETA {eta}")
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=context.partition_key, metadata={
            "clip": what, "percent": p.percent, "fps": p.fps, "speed": p.speed, "eta_s": p.eta if p.eta is not None else -1.0}))

    return report


@dg.asset(partitions_def=exports, group_name="export", kinds={"ffmpeg"}, pool="gpu",
          description="The encodes: one FFmpeg process per clip decodes it once and writes every target.")
def renditions(context: dg.AssetExecutionContext, vexport: VexportResource, encoders: EncoderResource, source: dict,
               segments: dict) -> dg.Output[list]:
    comp = parse_composition(source["composition"])
    info = MediaInfo.from_dict(source["info"])
    timeline = Timeline.from_dict(segments)
    book = PresetBook.load()
    settings = [book.resolve(t, info, f"targets[{i}]") for i, t in enumerate(comp.targets)]
    labels = unique_labels(settings)
    settings, hardware = encoders.choose(settings)
    context.log.info(f"encoders: {hardware['hardware']}")
    out_dir = vexport.paths.work / comp.id / "renditions"
    loudness = (comp.audio.target_lufs, comp.audio.true_peak) if comp.audio and comp.audio.normalize else None
    cache = RenditionCache(vexport.paths.cache)
    results, encode_wall, hits = [], 0.0, 0
    for clip in timeline.clips:
        folder = out_dir / clip.clip_id if clip.clip_id else out_dir
        finals = [folder / f"{label}.{s.ext}" for label, s in zip(labels, settings)]
        what = clip.clip_id or "timeline"
        done = render_clip(info, clip, settings, finals, on_progress=_reporter(context, what),
                           timeout=vexport.encode_timeout_s, loudness=loudness, cache=cache, source_sha256=source["sha256"])
        encode_wall += done.wall_s
        hits += sum(done.cached)
        context.log.info(f"{what}: {len(finals) - sum(done.cached)} encoded in {done.wall_s:.1f} s, {sum(done.cached)} from the cache")
        for label, s, path, was_cached, copied, used in zip(labels, done.settings, finals, done.cached, done.copied, done.encoders):
            out = probe(path, where=str(path))
            results.append({
                "target": label, "clip_id": clip.clip_id, "path": str(path), "container": s.container,
                "video_codec": s.video_codec, "audio_codec": s.audio_codec if out.audio else None,
                "width": out.video.display_width, "height": out.video.display_height, "fps": out.video.fps,
                "duration": out.duration, "size_bytes": out.size_bytes, "sha256": sha256_file(path),
                "encoder": "copy" if copied else used, "wall_s": round(done.wall_s, 3), "cached": was_cached,
                "loudness_pass1": done.loudness, "expected_duration": clip.duration,
                "source_has_audio": info.has_audio, "settings": s.to_dict(),
            })
    table = "\n".join(f"| {r['clip_id'] or '-'} | {r['target']} | {r['container']} | {r['video_codec']}/{r['audio_codec'] or '-'} | "
                      f"{r['width']}x{r['height']} | {r['fps']} | {r['duration']:.3f} | {r['size_bytes']:,} | {r['encoder']} | "
                      f"{'cache' if r['cached'] else 'encoded'} |" for r in results)
    return dg.Output(results, metadata={
        "renditions": len(results),
        "total_bytes": sum(r["size_bytes"] for r in results),
        "encode_wall_s": round(encode_wall, 2),
        "cache_hits": hits,
        "stream_copied": sum(r["encoder"] == "copy" for r in results),
        "loudness": ", ".join(f"{r['clip_id'] or 'timeline'}: {r['loudness_pass1']['measured_i']} -> {r['loudness_pass1']['target_i']} LUFS "
                              f"({r['loudness_pass1']['mode']})" for r in results if r["loudness_pass1"]) or "not normalized",
        "encoders": ", ".join(sorted({r["encoder"] for r in results})),
        "hardware_detection": hardware["hardware"],
        "table": dg.MetadataValue.md("| clip | target | container | codecs | size | fps | duration | bytes | encoder | from |\n"
                                     "|---|---|---|---|---|---|---|---|---|---|\n" + table),
    })
