"""Capacity model (see bench/README.md and docs/capacity.md): what vexport's encodes cost in CPU time, and from
that the fleet a 1080p ladder needs.

Per codec, tier and output size, one corpus clip (`core/samples.py`, photographs in motion, 1080p30, 2 s) is
encoded through vexport's own path (`PresetBook.resolve`, then `render_clip`), and FFmpeg's CPU time is read
from `getrusage(RUSAGE_CHILDREN)`: CPU-seconds per output second, which does not depend on how busy the machine
is. The B1 ladder is encoded the same way, as one FFmpeg process for its four targets, the way an encode step
runs it, on that clip and on the film-grain clip (hard content). From the ladder's cost: 30-minute exports an
hour per worker size, and the workers "30 minutes of 1080p ladder in under 10 minutes" needs, assuming encode
time falls linearly with cores (B10 measures how far it really does).

run.py imports this module for its BENCHMARKS registry, so nothing here imports run.py: RUNS and CACHE are read
the same way as there, and the ladder is handed in.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from pathlib import Path

from vexport_pipeline.core.media.commands import video_args
from vexport_pipeline.core.media.probe import MediaInfo, probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.samples import make_sample
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import EncodeSettings, PresetBook

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))

CODECS = [("h264", "mp4"), ("h265", "mp4"), ("vp9", "webm"), ("vp8", "webm"), ("av1", "mp4"), ("prores", "mov")]
TIERS = ["low", "medium", "high"]
SIZES = ["1080p", "720p"]
CLIP_S, CLIP_FPS = 2.0, 30  # 30 fps like the B1 source, so costs apply to its ladder as they are
CELL_KIND, LADDER_KINDS = "photo", ("photo", "grain")  # the ladder also on hard content: grain costs bits and time
WORKER_CORES = [2, 4, 8, 16, 32]
EXPORT_S, DEADLINE_S = 30 * 60, 10 * 60  # the goal: 30 minutes of 1080p ladder in under 10 minutes
CHUNK_S = 120  # VEXPORT_CHUNK_SECONDS' default: a 30-minute clip is 15 encode steps


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the FFmpeg encodes) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def speed(s: EncodeSettings) -> str:
    """The encoder's speed knob as vexport sets it: x26x/SVT preset, libvpx cpu-used, ProRes profile."""
    a = video_args(s)
    if "cpu-used" in a:
        return f"cpu-used {a['cpu-used']}"
    return f"preset {a['preset']}" if "preset" in a else f"profile {a['profile:v']}"


def cost(info: MediaInfo, settings: list[EncodeSettings], out: Path, runs: int) -> dict:
    """Median CPU-seconds per output second of one FFmpeg process encoding `settings` (and its wall time)."""
    clip = Clip(None, [(0.0, info.duration)])  # no keyframe list: nothing is stream-copied, everything encodes
    finals = [out / f"{s.label}.{s.ext}" for s in settings]
    cpus, walls = [], []
    for _ in range(runs):
        c0, t0 = children_cpu(), time.perf_counter()
        render_clip(info, clip, settings, finals)
        walls.append(time.perf_counter() - t0)
        cpus.append(children_cpu() - c0)
    return {
        "cpu_per_s": round(statistics.median(cpus) / clip.duration, 2),
        "cpu_runs_s": [round(c, 2) for c in cpus],
        "wall_s": round(statistics.median(walls), 2),
        "kbps": [round(f.stat().st_size * 8 / clip.duration / 1e3) for f in finals],
    }


def fleet(ladder_cpu_per_s: float) -> list[dict]:
    """Per worker size: 30-minute exports an hour, and workers for one in under 10 minutes, (a) as CPU allows
    and (b) with 120 s chunks, where one chunk is one step on one worker and must itself fit in the deadline."""
    work = EXPORT_S * ladder_cpu_per_s  # CPU-seconds of one 30-minute ladder
    chunks = math.ceil(EXPORT_S / CHUNK_S)
    rows = []
    for cores in WORKER_CORES:
        chunk_wall = CHUNK_S * ladder_cpu_per_s / cores
        waves = math.floor(DEADLINE_S / chunk_wall)  # chunks one worker gets through before the deadline
        rows.append(
            {
                "cores": cores,
                "exports_per_hour": round(3600 * cores / work, 2),
                "workers_cpu_bound": math.ceil(work / DEADLINE_S / cores),
                "chunk_wall_s": round(chunk_wall),
                "workers_chunked": math.ceil(chunks / waves) if waves else None,
                # a chunk too long for the deadline on this size: the chunk length that would fit
                "chunk_s_that_fits": None if waves else math.floor(DEADLINE_S * cores / ladder_cpu_per_s),
            }
        )
    return rows


def markdown(cells: list[dict], ladders: dict[str, dict], fleets: dict[str, list[dict]]) -> str:
    """The tables of docs/capacity.md; each fleet figure for every ladder clip, as `photo / grain`."""
    sizes = [s for s in SIZES if any(c["size"] == s for c in cells)]
    out = [
        "| codec | tier | encoder settings | " + " | ".join(f"{s} CPU-s / s" for s in sizes) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in sizes) + " |",
    ]
    for codec, _ in CODECS:
        for tier in dict.fromkeys(c["tier"] for c in cells if c["codec"] == codec):
            by_size = {c["size"]: c for c in cells if c["codec"] == codec and c["tier"] == tier}
            first = next(iter(by_size.values()))
            knobs = f"{first['encoder']} {first['speed']}" + (f", crf {first['crf']}" if first["crf"] else "")
            figures = " | ".join(str(by_size[s]["cpu_per_s"]) if s in by_size else "-" for s in sizes)
            out.append(f"| {codec} | {tier} | {knobs} | {figures} |")
    out.append("")
    for kind, ladder in ladders.items():
        total = f" (its cells added up: {ladder['sum_of_cells']})" if "sum_of_cells" in ladder else ""
        out.append(f"- B1 ladder on the {kind} clip: **{ladder['cpu_per_s']} CPU-s per output second**{total}")
    kinds = " / ".join(ladders)
    out += [
        "",
        f"| worker | 30-min exports / hour ({kinds}) | workers, CPU bound | one 120 s chunk takes"
        " | workers, 120 s chunks |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, cores in enumerate(WORKER_CORES):
        rows = [fleets[kind][n] for kind in ladders]
        out.append(
            f"| {cores} cores | {_each(rows, 'exports_per_hour')} | {_each(rows, 'workers_cpu_bound')}"
            f" | {_each(rows, 'chunk_wall_s', ' s')} | {_each(rows, 'workers_chunked')} |"
        )
    return "\n".join(out)


def _each(rows: list[dict], key: str, unit: str = "") -> str:
    """One fleet figure for every ladder clip, `a / b`; a missing worker count says what chunk length would fit."""
    return " / ".join(
        f"{r[key]}{unit}" if r[key] is not None else f"none (chunks <= {r['chunk_s_that_fits']} s)" for r in rows
    )


def corpus_clip(kind: str) -> MediaInfo:
    path = CACHE / "corpus" / f"{kind}-{CLIP_S:g}s-{CLIP_FPS}fps.mp4"
    if not path.exists():
        make_sample(kind, path, seconds=CLIP_S, rate=CLIP_FPS)
    return probe(path)


def bench_capacity(quick: bool, ladder_targets: list[Target]) -> dict:
    """CAP: CPU-seconds per output second per codec, tier and size (`--quick`: the medium tier only), the B1
    ladder's, and the fleet table."""
    info = corpus_clip(CELL_KIND)
    book = PresetBook.load()
    out = CACHE / "out" / "CAP"
    cells = []
    for codec, fmt in CODECS:
        # ProRes has no tiers (its profile is the quality): one cell per size
        for tier in ["any"] if codec == "prores" else (["medium"] if quick else TIERS):
            for size in SIZES:
                quality = {} if codec == "prores" else {"quality": tier}
                s = book.resolve(Target(format=fmt, video_codec=codec, resolution=size, **quality), info)
                cell = {"codec": codec, "tier": tier, "size": size, "encoder": s.encoder, "speed": speed(s)}
                cells.append({**cell, "crf": s.crf, **cost(info, [s], out, RUNS)})
                c = cells[-1]
                print(f"  {codec:6} {tier:7} {size:5} {c['cpu_per_s']:6.2f} CPU-s/s ({c['wall_s']:.1f} s wall)")
    ladders = {}
    for kind in LADDER_KINDS:
        clip = corpus_clip(kind)
        settings = [book.resolve(t, clip) for t in ladder_targets]
        ladders[kind] = {"targets": [s.label for s in settings], **cost(clip, settings, out / kind, RUNS)}
        print(f"  ladder, {kind} clip: {ladders[kind]['cpu_per_s']:.2f} CPU-s/s ({ladders[kind]['wall_s']:.1f} s wall)")
    # on the cells' clip the ladder should cost about its cells added up (less three decodes of the source); the
    # tiktok rung (1080x1920) counts as a 1080p cell: as many pixels
    rungs = [book.resolve(t, info) for t in ladder_targets]
    parts = [(s.video_codec, s.quality, "720p" if s.height == 720 else "1080p") for s in rungs]
    found = [next((c["cpu_per_s"] for c in cells if (c["codec"], c["tier"], c["size"]) == p), None) for p in parts]
    if None not in found:
        ladders[CELL_KIND]["sum_of_cells"] = round(sum(found), 2)
    fleets = {kind: fleet(ladder["cpu_per_s"]) for kind, ladder in ladders.items()}
    table = markdown(cells, ladders, fleets)
    print("\n" + table)
    return {
        "source_s": info.duration,
        "clips": {kind: f"{kind}-{CLIP_S:g}s-{CLIP_FPS}fps.mp4" for kind in {CELL_KIND, *LADDER_KINDS}},
        "cells": cells,
        "ladders": ladders,
        "fleet": fleets,
        "markdown": table,
        "ratios": {f"ladder CPU-s per output s, {kind}": ladder["cpu_per_s"] for kind, ladder in ladders.items()},
        "goals": {},
    }
