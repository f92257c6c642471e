"""vexport benchmarks (see bench/README.md): B1 ladder, B2 fast cut, B3 memory, B4 validation, B5 target quality,
B6 download gateway and B7 S3 upload (both in bench/delivery.py), B8 overhead and B9 intake (bench/operations.py),
CAP capacity model (bench/capacity.py).

    make bench                       # all three, BENCH_RUNS runs per contender (default 3)
    .venv/bin/python bench/run.py --only B1,B3 --quick

Contenders run alternately (A, B, C, A, B, C...) and each reports the median of its runs, so a
noisy shared machine slows all of them alike. Results are printed and written to bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
from capacity import bench_capacity
from delivery import bench_gateway, bench_upload
from operations import bench_intake, bench_overhead

from vexport_pipeline.core.media.commands import audio_args, container_args, video_args
from vexport_pipeline.core.media.probe import MediaInfo, count_frames, keyframe_times, probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip, build_timeline
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline.core.spec.presets import TIERS, EncodeSettings, PresetBook

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results.json"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
FFMPEG = ffmpeg_exe()
SOURCE_RECIPE = 1  # bump when source_command changes: cached sources are named after it

LADDER = [
    Target(preset="youtube_1080p"),
    Target(preset="web_720p"),
    Target(preset="tiktok"),
    Target(format="webm", video_codec="vp9", resolution="720p"),
]
LADDER_4K = [
    Target(preset="youtube_4k"),
    Target(preset="youtube_1080p"),
    Target(preset="web_720p"),
    Target(preset="tiktok"),
]


# --- sources -------------------------------------------------------------------------------------


def source_command(path: Path, width: int, height: int, seconds: int, preset: str) -> list[str]:
    """A panned Mandelbrot still blended with testsrc2 (moving bars, text, a sweeping line), a
    Game-of-Life picture-in-picture drifting across it, light temporal grain; built at 1080p30 and
    scaled to the requested size. With tone + pink noise as stereo AAC. About 19 Mb/s at 1080p."""
    video = (
        "mandelbrot=s=2880x1620:r=30:start_scale=1.5:maxiter=1024,trim=end_frame=1,loop=loop=-1:size=1,"
        "crop=1920:1080:x='(iw-ow)/2*(1+sin(t/3))':y='(ih-oh)/2*(1+cos(t/4))'[pan];"
        "testsrc2=s=1920x1080:r=30[bars];"
        "[pan][bars]blend=all_mode=average[bg];"
        "life=s=480x270:r=30:mold=10:ratio=0.1:life_color=#ffd040:death_color=#602020,"
        "scale=960:540:flags=neighbor[pip];"
        "[bg][pip]overlay=x='(W-w)/2*(1+sin(t*0.7))':y='(H-h)/2*(1+cos(t*0.5))',"
        f"scale={width}:{height},noise=alls=2:allf=t,format=yuv420p[v]"
    )
    audio = (
        "sine=frequency=220:sample_rate=48000[tone];anoisesrc=color=pink:amplitude=0.05:sample_rate=48000[hiss];"
        "[tone][hiss]amix=inputs=2:normalize=0,aformat=sample_rates=48000:channel_layouts=stereo[a]"
    )
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-filter_complex",
        f"{video};{audio}",
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-t",
        str(seconds),
        # crf 16 at veryfast; the quick 4K preset (ultrafast) gets 20 to keep the file size sane
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        "16" if preset == "veryfast" else "20",
        "-g",
        "60",
        "-keyint_min",
        "60",
        "-sc_threshold",
        "0",  # a keyframe exactly every 2 s
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        "-movflags",
        "+faststart",
        str(path),
    ]


def source(width: int, height: int, seconds: int, preset: str = "veryfast") -> MediaInfo:
    """The probed source of this size and length, generated on first use and cached."""
    path = CACHE / f"src{SOURCE_RECIPE}_{width}x{height}_{seconds}s_{preset}.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"  generating {path.name} (cached for later runs)...", flush=True)
        partial = path.with_suffix(".partial.mp4")
        started = time.perf_counter()
        subprocess.run(source_command(partial, width, height, seconds, preset), check=True)
        partial.rename(path)
        print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    info = probe(path)
    print(f"  source {path.name}: {info.duration:.1f} s, {info.bit_rate / 1e6:.1f} Mb/s", flush=True)
    return info


# --- timing --------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (FFmpeg)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call. CPU time suffers less from a busy machine than wall time."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def alternate(contenders: dict[str, Callable[[], object]], runs: int) -> dict[str, dict]:
    """Run the contenders in turn (A, B, C, A, B, C...) `runs` times; each one's times and medians."""
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(runs):
        for name, fn in contenders.items():
            wall, cpu = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
            print(f"  run {i + 1}/{runs} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return {
        name: {
            "median_s": round(statistics.median(walls[name]), 3),
            "runs_s": [round(x, 3) for x in walls[name]],
            "median_cpu_s": round(statistics.median(cpus[name]), 3),
        }
        for name in contenders
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def run_quiet(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


# --- hand-written competitors --------------------------------------------------------------------


def options(s: EncodeSettings) -> list[str]:
    """vexport's own encoder, audio and container options for a target, as argv."""
    opts = {**video_args(s), **audio_args(s), **container_args(s)}
    return [x for k, v in opts.items() for x in (f"-{k}", str(v))]


def hand_filter(s: EncodeSettings, info: MediaInfo) -> str:
    """The least filtering that gives vexport's frames for this target (sources here are square-pixel
    yuv420p 16:9, so vexport's pad, setsar and format steps are no-ops and a person would leave them out)."""
    v = info.video
    steps = [] if s.rate == v.rate else [f"fps={s.fps}"]
    if (s.width, s.height) != (v.display_width, v.display_height):
        if s.fit == "crop":
            steps.append(f"scale={s.width}:{s.height}:force_original_aspect_ratio=increase,crop={s.width}:{s.height}")
        else:
            steps.append(f"scale={s.width}:{s.height}")
    return ",".join(steps)


def one_command(info: MediaInfo, settings: list[EncodeSettings], outs: list[Path]) -> list[str]:
    """(a): one FFmpeg, the source decoded once, split/asplit to every target."""
    n = len(settings)
    graph = [
        f"[0:v]split={n}" + "".join(f"[v{i}]" for i in range(n)),
        f"[0:a]asplit={n}" + "".join(f"[a{i}]" for i in range(n)),
    ]
    argv = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", info.path]
    maps = []
    for i, s in enumerate(settings):
        label = f"v{i}"
        if chain := hand_filter(s, info):
            graph.append(f"[v{i}]{chain}[o{i}]")
            label = f"o{i}"
        maps.append(["-map", f"[{label}]", "-map", f"[a{i}]", *options(s), str(outs[i])])
    return argv + ["-filter_complex", ";".join(graph)] + [x for m in maps for x in m]


def bench_scaling(quick: bool) -> dict:
    """B10 in a process of its own (bench/scaling.py): it sets the executor and artifact settings per run."""
    argv = [sys.executable, str(BENCH / "scaling.py"), *(["--quick"] if quick else [])]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    r = json.loads(out[out.index("\n{\n") + 1 :])  # the last thing it prints
    r["goals"] = {f"efficiency >= 0.85 up to {r['cpus']} workers": all(
        x["efficiency"] >= 0.85 for n, x in r["runs"].items() if int(n) <= r["cpus"])}  # fmt: skip
    return r


def bare_command(src: Path, out: Path, target: dict) -> list[str]:
    """B8's competitor: the one FFmpeg command that makes `target`'s file from `src`."""
    info = probe(src)
    return one_command(info, [PresetBook.load().resolve(Target(**target), info)], [out])


def separate_commands(info: MediaInfo, settings: list[EncodeSettings], outs: list[Path]) -> list[list[str]]:
    """(b): one FFmpeg per target, run one after another (the source decoded once per target)."""
    cmds = []
    for s, out in zip(settings, outs):
        chain = hand_filter(s, info)
        cmds.append(
            [
                FFMPEG,
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-i",
                info.path,
                *(["-vf", chain] if chain else []),
                "-map",
                "0:v:0",
                "-map",
                "0:a:0",
                *options(s),
                str(out),
            ]
        )
    return cmds


def describe(path: Path) -> tuple:
    """What must match between contenders' outputs: codecs, size, frame count (0 where the container,
    like WebM, does not record it)."""
    info = probe(path)
    return (
        info.video.codec,
        info.video.width,
        info.video.height,
        info.video.frames,
        info.audio.codec if info.audio else None,
    )


# --- benchmarks ----------------------------------------------------------------------------------


def bench_ladder(quick: bool) -> dict:
    """B1: a 1080p30 source to four targets: vexport vs one hand-written FFmpeg vs four in sequence."""
    seconds = 6 if quick else 30
    info = source(1920, 1080, seconds)
    book = PresetBook.load()
    settings = [book.resolve(t, info) for t in LADDER]
    out = CACHE / "out" / "B1"
    outs = {name: [out / name / f"{s.label}.{s.ext}" for s in settings] for name in ("vexport", "a", "b")}
    for paths in outs.values():
        paths[0].parent.mkdir(parents=True, exist_ok=True)
    # A clip without keyframe information: B1 measures encoding, so no rung may be stream-copied.
    clip = Clip(None, [(0.0, info.duration)])
    argv: dict[str, list[str]] = {}

    def vexport() -> None:
        argv["vexport"] = render_clip(info, clip, settings, outs["vexport"]).argv

    one = one_command(info, settings, outs["a"])
    separate = separate_commands(info, settings, outs["b"])
    times = alternate(
        {
            "vexport": vexport,
            "(a) one ffmpeg": lambda: run_quiet(one),
            "(b) 4 ffmpeg in turn": lambda: [run_quiet(c) for c in separate],
        },
        RUNS,
    )
    print("  vexport argv:", shlex.join(argv["vexport"]))
    print("  (a) argv:    ", shlex.join(one))
    for c in separate:
        print("  (b) argv:    ", shlex.join(c))
    shapes = {name: [describe(p) for p in paths] for name, paths in outs.items()}
    (v, v_cpu), (a, a_cpu), (b, b_cpu) = ((t["median_s"], t["median_cpu_s"]) for t in times.values())
    return {
        "source_s": info.duration,
        "targets": [s.label for s in settings],
        "times": times,
        "ratios": {
            "vexport/(a)": ratio(v, a),
            "(b)/(a)": ratio(b, a),
            "(b)/vexport": ratio(b, v),
            "vexport/(a) CPU time": ratio(v_cpu, a_cpu),
            "(b)/(a) CPU time": ratio(b_cpu, a_cpu),
        },
        "realtime_factor": ratio(info.duration, v),
        "outputs_match": shapes["vexport"] == shapes["a"] == shapes["b"],
        "outputs": shapes["vexport"],
        "goals": {"vexport/(a) <= 1.05": ratio(v, a) <= 1.05},
        "argv": {"vexport": argv["vexport"], "(a)": one, "(b)": separate},
    }


def bench_fast_cut(quick: bool) -> dict:
    """B2: three keyframe-aligned segments joined into a target equal to the source:
    vexport (stream copy when it can) vs vexport forced to re-encode (an explicit crf)."""
    seconds, segments = (20, [(2, 4), (8, 10), (14, 18)]) if quick else (60, [(4, 10), (20, 26), (40, 48)])
    info = source(1920, 1080, seconds)
    comp = parse_composition(
        {
            "source": info.path,
            "export_type": "combined",
            "segments": [{"start": s, "end": e} for s, e in segments],
            "targets": [
                {"format": "mp4", "video_codec": "h264", "resolution": "source", "fps": "source", "quality": "medium"}
            ],
        }
    )
    clip = build_timeline(comp, info, keyframe_times(info.path)).clips[0]
    book = PresetBook.load()
    target = comp.targets[0]
    plain = book.resolve(target, info)
    forced = book.resolve(target.model_copy(update={"crf": plain.crf}), info)
    out = CACHE / "out" / "B2"
    fast_out, encode_out = out / "vexport.mp4", out / "reencode.mp4"
    renders = {}

    def run(name: str, s: EncodeSettings, dest: Path) -> None:
        renders[name] = render_clip(info, clip, [s], [dest])

    times = alternate(
        {"vexport": lambda: run("vexport", plain, fast_out), "re-encode": lambda: run("re-encode", forced, encode_out)},
        RUNS,
    )
    copied = bool(renders["vexport"].copied and renders["vexport"].copied[0])
    if renders["re-encode"].copied and renders["re-encode"].copied[0]:
        raise SystemExit("B2: an explicit crf no longer forces a re-encode; the reference is not an encode")
    print("  vexport argv:   ", shlex.join(renders["vexport"].argv))
    print("  re-encode argv: ", shlex.join(renders["re-encode"].argv))
    if not copied:
        print("  NOTE: vexport did not stream-copy (no fast path for this target): both contenders re-encode")
    fps = float(info.video.rate)
    expected_s = clip.duration
    expected_frames = round(expected_s * fps)
    got = probe(fast_out)
    frames, samples, errors = count_frames(fast_out)
    v, r = times["vexport"]["median_s"], times["re-encode"]["median_s"]
    checks = {
        "expected_s": expected_s,
        "probed_s": got.duration,
        "video_stream_s": got.video.duration,
        "expected_frames": expected_frames,
        "decoded_frames": frames,
        "audio_s": round(samples / got.audio.sample_rate, 4) if got.audio else None,
        "decode_errors": errors,
    }
    return {
        "source_s": info.duration,
        "segments": segments,
        "stream_copy": copied,
        "times": times,
        "ratios": {"re-encode/vexport": ratio(r, v)},
        "checks": checks,
        "goals": {
            "re-encode/vexport >= 20": ratio(r, v) >= 20,
            "duration within 1 frame": abs(got.duration - expected_s) <= 1 / fps,
            "frame count exact": frames == expected_frames and not errors,
        },
        "argv": {"vexport": renders["vexport"].argv, "re-encode": renders["re-encode"].argv},
    }


class RssMonitor:
    """Polls this process's RSS and its children's (FFmpeg) every `interval` seconds; keeps the peaks."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.me = psutil.Process()
        self.python_peak = self.child_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.python_peak = max(self.python_peak, self.me.memory_info().rss)
            for child in self.me.children(recursive=True):
                try:
                    self.child_peak = max(self.child_peak, child.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def bench_memory(quick: bool) -> dict:
    """B3: peak RSS of this Python process (and of FFmpeg) while vexport renders a 4K ladder."""
    seconds = 10 if quick else 60
    info = source(3840, 2160, seconds, preset="ultrafast")  # 4K at veryfast takes too long to generate on 2 cores
    book = PresetBook.load()
    settings = [book.resolve(t, info) for t in LADDER_4K]
    out = CACHE / "out" / "B3"
    baseline = psutil.Process().memory_info().rss
    print(f"  rendering {len(settings)} targets once (no repeats: this one measures memory)...", flush=True)
    with RssMonitor() as mon:
        wall, cpu = timed(
            lambda: render_clip(
                info, Clip(None, [(0.0, info.duration)]), settings, [out / f"{s.label}.{s.ext}" for s in settings]
            )
        )
    mb = 1 / (1 << 20)
    python_mb, ffmpeg_mb = round(mon.python_peak * mb, 1), round(mon.child_peak * mb, 1)
    return {
        "source_s": info.duration,
        "targets": [s.label for s in settings],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 1),
        "realtime_factor": ratio(info.duration, wall),
        "python_rss_before_mb": round(baseline * mb, 1),
        "python_peak_rss_mb": python_mb,
        "ffmpeg_peak_rss_mb": ffmpeg_mb,
        "goals": {"python peak RSS <= 300 MB": python_mb <= 300},
    }


def bench_validation(quick: bool) -> dict:
    """B4: validating the B1 ladder with default settings (full decode, loudness, black/silence, sampled
    VMAF/PSNR/SSIM against the source) vs encoding it; goal: validation <= half the encode."""
    from vexport_pipeline.core.validation.checks import check_file
    from vexport_pipeline.core.validation.export import in_parallel
    from vexport_pipeline.core.validation.vmaf import score_clip

    seconds = 6 if quick else 30
    info = source(1920, 1080, seconds)
    book = PresetBook.load()
    settings = [book.resolve(t, info) for t in LADDER]
    out = CACHE / "out" / "B4"
    outs = [out / f"{s.label}.{s.ext}" for s in settings]
    out.mkdir(parents=True, exist_ok=True)
    clip = Clip(None, [(0.0, info.duration)])
    reports = {}

    def validate() -> None:
        scored = score_clip(list(zip(outs, settings)), info, clip)  # as validate_export: one pass per clip
        reports["last"] = in_parallel(
            lambda n: check_file(
                outs[n],
                settings[n],
                expected_duration=clip.duration,
                source_has_audio=info.has_audio,
                reference=(info, clip),
                scored=scored[n],
            ),
            range(len(outs)),
        )

    times = alternate({"encode": lambda: render_clip(info, clip, settings, outs), "validate": validate}, RUNS)
    e, v = times["encode"]["median_s"], times["validate"]["median_s"]
    return {
        "source_s": info.duration,
        "targets": [s.label for s in settings],
        "times": times,
        "ratios": {"validate/encode": ratio(v, e)},
        "statuses": [r.status for r in reports["last"]],
        "vmaf": [r.vmaf for r in reports["last"]],
        "goals": {"validate/encode <= 0.35": ratio(v, e) <= 0.35},
    }


B5_CODECS = [("h264", "mp4"), ("h265", "mp4"), ("vp9", "webm"), ("vp8", "webm"), ("av1", "mp4")]
B5_TIERS = ["low", "medium", "high"]
B5_KINDS = ["screen", "photo", "grain", "dark"]


def _corpus(seconds: float, kinds: list[str] = B5_KINDS) -> dict[str, MediaInfo]:
    from vexport_pipeline.core.samples import make_sample

    folder = CACHE / "corpus"
    out = {}
    for kind in kinds:
        path = folder / f"{kind}-{seconds:g}s.mp4"
        if not path.exists():
            make_sample(kind, path, seconds=seconds)
        out[kind] = probe(path)
    return out


def _b5_settings(info: MediaInfo) -> list[tuple[str, str, EncodeSettings, EncodeSettings]]:
    """The ladder of one clip: every codec x tier at 720p, as target quality resolves it and as 0.1 did
    (the fixed tier CRF under the old tier cap)."""
    from dataclasses import replace

    book = PresetBook.load()
    out = []
    for codec, fmt in B5_CODECS:
        for tier in B5_TIERS:
            tq = book.resolve(Target(format=fmt, video_codec=codec, resolution="720p", quality=tier), info)
            old_crf = _old_crf(tier, codec)
            fixed = book.resolve(
                Target(format=fmt, video_codec=codec, resolution="720p", quality=tier, crf=old_crf), info
            )
            out.append((codec, tier, tq, replace(fixed, vmaf_target=tq.vmaf_target, label=fixed.label + "_fixed")))
    return out


def _old_crf(tier: str, codec: str) -> int:
    """0.1's fixed CRF for a tier: x264's, moved per codec."""
    return min(63, TIERS[tier][0] + {"h265": 5, "vp9": 10, "vp8": 6, "av1": 12}.get(codec, 0))


def _encode(info: MediaInfo, clip: Clip, s: EncodeSettings, out: Path, **cache) -> dict:
    """Encode (or take from the rendition cache) and measure as validation measures (`stride`; a score the search
    kept for this very file is taken instead): CPU of both, kb/s, and VMAF on every frame."""
    from vexport_pipeline.core.files import sha256_file
    from vexport_pipeline.core.validation.vmaf import Scores, score, stride

    c0 = cpu_seconds()
    done = render_clip(info, clip, [s], [out], **cache)
    kept = Scores(cache["cache"], cache["source_sha256"]) if cache else None
    recalled = kept and kept.recall(sha256_file(out), clip, done.settings[0], stride(clip, done.settings[0]))
    measured = recalled or score(out, info, clip, done.settings[0])
    cpu = cpu_seconds() - c0
    if measured["subsample"] != 1:  # the figure reported is on every frame; short clips' validation already is
        measured = score(out, info, clip, s, full=True, extras=False)
    return {
        "crf": s.crf,
        "cpu_s": round(cpu, 2),
        "cached": done.cached[0],
        "score_kept": bool(recalled),
        "kbps": round(out.stat().st_size * 8 / clip.duration / 1e3, 1),
        "vmaf": measured["vmaf_mean"],
    }


def _b5_clip(kind: str, info: MediaInfo, work: Path) -> list[dict]:
    """One clip's ladder both ways. Target quality runs as the pipeline runs it: `tune_all` over the ladder
    with a rendition cache, then each rendition's encode (a hit where the search's probe is the file)."""
    import shutil

    from vexport_pipeline.core.files import sha256_file
    from vexport_pipeline.core.media.cache import RenditionCache
    from vexport_pipeline.core.media.timeline import Timeline
    from vexport_pipeline.core.media.tuning import tune_all

    clip, ladder = Clip(None, [(0.0, info.duration)]), _b5_settings(info)
    rows = [
        {
            "codec": c,
            "tier": t,
            "clip": kind,
            "vmaf_target": tq.vmaf_target,
            "fixed": _encode(info, clip, f, work / f"f.{f.ext}"),
        }
        for c, t, tq, f in ladder
    ]
    shutil.rmtree(work / "cache", ignore_errors=True)
    keep = {"cache": RenditionCache(work / "cache"), "source_sha256": sha256_file(Path(info.path))}
    c0 = cpu_seconds()
    tuned = tune_all(info, Timeline("single", [clip], {}), [tq for _, _, tq, _ in ladder], **keep)
    search_s = cpu_seconds() - c0
    for row, t in zip(rows, tuned):
        row["target"] = {
            **_encode(info, clip, t.settings, work / f"t.{t.settings.ext}", **keep),
            "probes": len(t.trials),
        }
        row["search_cpu_s"] = round(search_s / len(rows), 2)  # the ladder's search, shared out evenly
    return rows


def _b5_equal_fixed(corpus: dict[str, MediaInfo], rows: list[dict], work: Path) -> None:
    """The fairer bits baseline: per codec and tier, today's settings at the one fixed CRF that does at least as
    well as target quality on every clip (the lowest CRF the search found for it), encoded on every clip."""
    from dataclasses import replace

    settings = {(k, c, t): tq for k, info in corpus.items() for c, t, tq, _ in _b5_settings(info)}
    for row in rows:
        crf = min(r["target"]["crf"] for r in rows if (r["codec"], r["tier"]) == (row["codec"], row["tier"]))
        s = replace(settings[row["clip"], row["codec"], row["tier"]], crf=crf)
        info, clip = corpus[row["clip"]], Clip(None, [(0.0, corpus[row["clip"]].duration)])
        row["fixed_equal"] = _encode(info, clip, s, work / f"e.{s.ext}")


def bench_target_quality(quick: bool) -> dict:
    """B5: target quality vs the fixed tier CRF, per corpus clip, codec and tier (720p from 1080p): CPU of the
    encodes and of validation's VMAF, the search included. Also the calibration table: the CRF each tier's target
    needs per codec and content."""
    seconds = 2.0 if quick else 6.0
    corpus = _corpus(seconds)
    work = CACHE / "out" / "B5"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, info in corpus.items():
        rows += _b5_clip(kind, info, work)
        for row in rows[-len(B5_CODECS) * len(B5_TIERS) :]:
            f, t = row["fixed"], row["target"]
            print(
                f"  {row['codec']:5} {row['tier']:7} {kind:7} fixed crf {f['crf']:>2} {f['kbps']:>8} kb/s VMAF"
                f" {f['vmaf']:6} | target {row['vmaf_target']:g}: crf {t['crf']:>2} {t['kbps']:>8} kb/s VMAF"
                f" {t['vmaf']:6} ({t['probes']} probe(s){', file from the search' if t['cached'] else ''})",
                flush=True,
            )
    _b5_equal_fixed(corpus, rows, work)
    fixed_cpu = sum(r["fixed"]["cpu_s"] for r in rows)
    target_cpu = sum(r["target"]["cpu_s"] + r["search_cpu_s"] for r in rows)
    bits = sum(r["target"]["kbps"] for r in rows) / sum(r["fixed"]["kbps"] for r in rows)
    bits_equal = sum(r["target"]["kbps"] for r in rows) / sum(r["fixed_equal"]["kbps"] for r in rows)
    off = [abs(r["target"]["vmaf"] - r["vmaf_target"]) for r in rows]
    return {
        "source_s": seconds,
        "cases": rows,
        "ratios": {
            "CPU target/fixed": round(target_cpu / fixed_cpu, 3),
            "bits target/fixed 0.1 CRF": round(bits, 3),
            "bits target/fixed CRF reaching every target": round(bits_equal, 3),
            "within 1.5 of target": round(sum(o <= 1.5 for o in off) / len(off), 3),
            "fixed 0.1 CRF under floor": sum(r["fixed"]["vmaf"] < r["vmaf_target"] - 2 for r in rows),
            "fixed CRF reaching every target under target": sum(
                r["fixed_equal"]["vmaf"] < r["vmaf_target"] for r in rows
            ),
            "mean probes": round(statistics.mean(r["target"]["probes"] for r in rows), 2),
        },
        "goals": {
            "CPU <= 1.25": target_cpu / fixed_cpu <= 1.25,
            "bits <= 0.80 (vs the fixed CRF reaching every target)": bits_equal <= 0.80,
            "VMAF within 1.5": all(o <= 1.5 for o in off),
        },
    }


def bench_target_quality_ladder(quick: bool) -> dict:
    """B5L: target quality on the B1 ladder, a 1080p ladder of a clip long enough to be sampled (20 s; full: 30 s),
    per corpus clip (photographs in motion, film grain): the ladder at 0.1's fixed tier CRF vs the ladder as
    the pipeline makes it (`tune_all` with a rendition cache, one render of all targets); CPU of the search, the
    encode and validation's VMAF pass (`score_by_clip`'s pass: every rendition of the clip at once, every 10th
    frame), bits and that VMAF."""
    import shutil
    from dataclasses import replace

    from vexport_pipeline.core.files import sha256_file
    from vexport_pipeline.core.media.cache import RenditionCache
    from vexport_pipeline.core.media.timeline import Timeline
    from vexport_pipeline.core.media.tuning import tune_all
    from vexport_pipeline.core.validation.vmaf import score_clip

    seconds = 20.0 if quick else 30.0
    work = CACHE / "out" / "B5L"
    book, cases = PresetBook.load(), []
    for kind, info in _corpus(seconds, ["photo", "grain"]).items():
        clip = Clip(None, [(0.0, info.duration)])
        ladder = [book.resolve(t, info) for t in LADDER]
        sides = {}
        for side in ("fixed", "target"):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            c0, probes, trials = cpu_seconds(), [], []
            if side == "fixed":
                settings = [replace(s, crf=_old_crf(s.quality, s.video_codec)) for s in ladder]
            else:
                cache = RenditionCache(work / "cache")
                found = tune_all(info, Timeline("single", [clip], {}), ladder, cache=cache,
                                 source_sha256=sha256_file(Path(info.path)))  # fmt: skip
                settings, probes = [f.settings for f in found], [len(f.trials) for f in found]
                trials = [[(t.crf, t.vmaf) for t in f.trials] for f in found]  # the samples' scores
            search = cpu_seconds() - c0
            outs = [work / f"{s.label}.{s.ext}" for s in settings]
            render_clip(info, clip, settings, outs)
            scores = score_clip(list(zip(outs, settings)), info, clip)
            sides[side] = {
                "cpu_s": round(cpu_seconds() - c0, 1),
                "search_cpu_s": round(search, 1),
                "crf": [s.crf for s in settings],
                "probes": probes,
                "trials": trials,
                "kbps": [round(o.stat().st_size * 8 / clip.duration / 1e3, 1) for o in outs],
                "vmaf": [q["vmaf_mean"] for q in scores],
            }
            print(f"  {kind:6} {side:6} {sides[side]}", flush=True)
        cases.append({"clip": kind, "targets": [s.vmaf_target for s in ladder], **sides})
    cpu = sum(c["target"]["cpu_s"] for c in cases) / sum(c["fixed"]["cpu_s"] for c in cases)
    bits = sum(sum(c["target"]["kbps"]) for c in cases) / sum(sum(c["fixed"]["kbps"]) for c in cases)
    off = [abs(v - t) for c in cases for v, t in zip(c["target"]["vmaf"], c["targets"])]
    return {
        "source_s": seconds,
        "cases": cases,
        "ratios": {
            "CPU target/fixed": round(cpu, 3),
            "bits target/fixed 0.1 CRF": round(bits, 3),
            "within 1.5 of target": round(sum(o <= 1.5 for o in off) / len(off), 3),
        },
        "goals": {"CPU <= 1.25": cpu <= 1.25},
    }


BENCHMARKS = {
    "B1": ("ladder", bench_ladder),
    "B2": ("fast cut", bench_fast_cut),
    "B3": ("memory", bench_memory),
    "B4": ("validation", bench_validation),
    "B5": ("target quality", bench_target_quality),
    "B5L": ("target quality, 1080p ladder", bench_target_quality_ladder),
    "B6": ("gateway", bench_gateway),
    "B7": ("upload", bench_upload),
    "B8": ("overhead", lambda quick: bench_overhead(quick, bare_command)),
    "B9": ("intake", bench_intake),
    "B10": ("chunked scaling", lambda quick: bench_scaling(quick)),
    "CAP": ("capacity model", lambda quick: bench_capacity(quick, LADDER)),
}


# --- report --------------------------------------------------------------------------------------


def summary_rows(name: str, r: dict) -> list[tuple[str, str]]:
    rows = [
        (
            f"{k} median",
            f"{t['median_s']:.1f} s wall"
            + (f", {t['median_cpu_s']:.1f} s CPU" if "median_cpu_s" in t else "")
            + f"  (wall runs: {', '.join(f'{x:.1f}' for x in t['runs_s'])})",
        )
        for k, t in r.get("times", {}).items()
    ]
    rows += [(k, f"{v:.2f}") for k, v in r.get("ratios", {}).items()]
    if "realtime_factor" in r:
        rows.append(("real-time factor", f"{r['realtime_factor']:.2f}x"))
    if name == "B1":
        rows.append(("outputs match", str(r["outputs_match"])))
    if name == "B2":
        c = r["checks"]
        rows += [
            ("stream copy used", str(r["stream_copy"])),
            ("duration", f"{c['probed_s']:.3f} s (expected {c['expected_s']:.3f})"),
            ("frames", f"{c['decoded_frames']} (expected {c['expected_frames']})"),
        ]
    if name == "B4":
        rows += [("statuses", ", ".join(r["statuses"])), ("VMAF", ", ".join(str(x) for x in r["vmaf"]))]
    if name == "B3":
        rows += [
            ("render", f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU"),
            ("python RSS before", f"{r['python_rss_before_mb']} MB"),
            ("python peak RSS", f"{r['python_peak_rss_mb']} MB"),
            ("ffmpeg peak RSS", f"{r['ffmpeg_peak_rss_mb']} MB"),
        ]
    if name == "B8":
        rows += [(f"step {k}", f"{v:.2f} s") for k, v in r["steps_s"].items()]
        rows += [("outside the run", f"{r['outside_run_s']:.2f} s"), ("overhead", f"{r['overhead_s']:.2f} s")]
    if name == "B9":
        rows.append(("vexport --help", f"{r['vexport_help_s']:.2f} s"))
    rows += [(f"goal: {g}", "met" if ok else "MISSED") for g, ok in r["goals"].items()]
    return rows


def print_table(results: dict) -> None:
    print("\n" + "=" * 78)
    for name, r in results.items():
        print(f"{name} {BENCHMARKS[name][0]} ({r['source_s']:.0f} s source)")
        for key, value in summary_rows(name, r):
            print(f"  {key:<28} {value}")
    print("=" * 78)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated benchmarks to run, e.g. B1,B3 (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter sources (B1 6 s, B2 20 s, B3 10 s)")
    args = parser.parse_args()
    names = [n.strip().upper() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{version}\n{os.cpu_count()} CPUs, BENCH_RUNS={RUNS}, {'quick' if args.quick else 'full'}", flush=True)
    results, started = {}, time.perf_counter()
    for name in names:
        title, fn = BENCHMARKS[name]
        print(f"\n{name} {title}", flush=True)
        t0 = time.perf_counter()
        results[name] = fn(args.quick)
        results[name]["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    print_table(results)
    total = time.perf_counter() - started
    print(f"total {total / 60:.1f} min; results in {RESULTS.relative_to(BENCH.parent)}")
    RESULTS.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "ffmpeg": version,
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "runs": RUNS,
                "quick": args.quick,
                "total_s": round(total, 1),
                "benchmarks": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
