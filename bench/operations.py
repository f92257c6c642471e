"""B8 overhead and B9 intake (see bench/README.md): what vexport's machinery costs around the encode.

B8: `vexport export` of a 5 s 720p clip to one target (web_720p, VMAF off) on a warm home (the hardware trials
kept, the Dagster instance made, Python's caches warm), against the bare FFmpeg command that makes the same
file. The rendition cache is emptied before each run so the encode is done every time. The breakdown comes
from the run's own step timings in the Dagster instance.

B9: one evaluation of the inbox sensor over 1,000 compositions waiting in the inbox, and `vexport list` over
10,000 registered exports, each with a run in the instance.

run.py imports this module for its BENCHMARKS registry, so nothing here imports run.py.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
VEXPORT = str(Path(sys.executable).with_name("vexport"))
CRF = 23  # explicit, as in the bare command: B8 measures the machinery, not the target-quality search (B5)


def _source(path: Path, seconds: int) -> Path:
    from vexport_pipeline.core.settings import ffmpeg_exe

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s=1280x720:r=30:d={seconds}",
             "-f", "lavfi", "-i", f"sine=f=440:d={seconds}", "-vf", "noise=alls=8:allf=t", "-c:v", "libx264",
             "-preset", "veryfast", "-crf", "18", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
             "-y", str(path)],
            check=True,
        )  # fmt: skip
    return path


def _no_hourly_limit(folder: Path) -> str:
    """An owners file (VEXPORT_OWNERS) lifting the hourly export limit: these benchmarks measure speed."""
    path = folder / "owners.yaml"
    path.write_text("default: {exports_per_hour: 1000000}\n")
    return str(path)


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def _steps(home: Path, export_ids: list[str]) -> dict[str, float]:
    """Median seconds per part of the `vexport export` runs of these exports, from the instance's step stats."""
    os.environ["VEXPORT_HOME"] = str(home)
    from dagster import DagsterInstance, RunsFilter

    from vexport_pipeline.defs.instance import ensure_dagster_home

    ensure_dagster_home()
    parts: dict[str, list[float]] = {}
    with DagsterInstance.get() as instance:
        for export_id in export_ids:
            [run_id] = [r.run_id for r in instance.get_runs(filters=RunsFilter(tags={"vexport/export": export_id}))]
            for s in instance.get_run_step_stats(run_id):
                key = s.step_key.split("[")[0]
                parts.setdefault(key, []).append((s.end_time or 0) - (s.start_time or 0))
            record = instance.get_run_record_by_id(run_id)
            parts.setdefault("run (start to end)", []).append(record.end_time - record.start_time)
    return {k: _median(v) for k, v in parts.items()}


def bench_overhead(quick: bool, bare_command: Callable[[Path, Path], list[str]]) -> dict:
    """B8. `bare_command(source, out, target)` is FFmpeg's argv for the same encode (from run.py)."""
    work = CACHE / "out" / "B8"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = _source(CACHE / "b8-720p-5s.mp4", 5)
    home = work / "home"
    env = {**os.environ, "VEXPORT_HOME": str(home), "VEXPORT_MEDIA_ROOTS": str(src.parent)}
    env.update(VEXPORT_OWNERS=_no_hourly_limit(work))
    env.pop("DAGSTER_HOME", None)
    runs = {"n": 0}
    counted: list[str] = []

    def vexport() -> None:
        runs["n"] += 1
        manifest = work / f"b8-{runs['n']}.yaml"
        manifest.write_text(
            json.dumps({"id": f"b8-{runs['n']}", "source": str(src), "validation": {"quality": "off"},
                        "targets": [{"preset": "web_720p", "crf": CRF}]})
        )  # fmt: skip
        shutil.rmtree(home / "cache", ignore_errors=True)  # encode every time
        subprocess.run([VEXPORT, "export", str(manifest)], env=env, check=True, stdout=subprocess.DEVNULL)
        if runs["n"] > 1:
            counted.append(f"b8-{runs['n']}")

    def ffmpeg() -> None:
        subprocess.run(bare_command(src, work / "bare.mp4", {"preset": "web_720p", "crf": CRF}), check=True)

    vexport()  # warm-up, not counted: makes the instance and keeps the hardware trials
    walls: dict[str, list[float]] = {"vexport": [], "ffmpeg": []}
    for i in range(RUNS):
        for name, fn in (("vexport", vexport), ("ffmpeg", ffmpeg)):
            t0 = time.perf_counter()
            fn()
            walls[name].append(time.perf_counter() - t0)
            print(f"  run {i + 1}/{RUNS} {name}: {walls[name][-1]:.2f} s", flush=True)
    steps = _steps(home, counted)
    v, f = _median(walls["vexport"]), _median(walls["ffmpeg"])
    validation = steps.get("validation_report", 0.0)
    overhead = round(v - f - validation, 3)
    return {
        "source_s": 5,
        "times": {k: {"median_s": _median(x), "runs_s": [round(y, 3) for y in x]} for k, x in walls.items()},
        "ratios": {"vexport/ffmpeg": round(v / f, 3)},
        "steps_s": steps,
        "outside_run_s": round(v - steps.get("run (start to end)", 0.0), 3),
        "overhead_s": overhead,
        "goals": {"overhead <= 1.5 s plus the validation decode": overhead <= 1.5},
    }


def _one_tick(home: Path, count: int) -> tuple[float, int]:
    """Seconds of one sensor evaluation over `count` compositions in the inbox, and the runs it asked for."""
    import dagster as dg

    from vexport_pipeline.defs.intake.sensors import composition_sensor
    from vexport_pipeline.defs.resources import HomeResource

    with dg.instance_for_test() as instance:
        resource = HomeResource(root=str(home), media_roots=os.environ["VEXPORT_MEDIA_ROOTS"].split(os.pathsep))
        ctx = dg.build_sensor_context(instance=instance, resources={"home": resource})
        t0 = time.perf_counter()
        result = composition_sensor(ctx)
        return time.perf_counter() - t0, len(result.run_requests or [])


def bench_intake(quick: bool) -> dict:
    """B9: a sensor tick over 1,000 inbox files; `vexport list` over 10,000 exports with runs."""
    import dagster as dg

    from vexport_pipeline.core.intake import registry
    from vexport_pipeline.core.settings import Home
    from vexport_pipeline.core.spec.loading import parse_composition

    files, exports = (200, 2000) if quick else (1000, 10000)
    src = _source(CACHE / "b8-720p-5s.mp4", 5)
    root = Path(tempfile.mkdtemp(prefix="b9-", dir=CACHE))
    os.environ.update(
        VEXPORT_HOME=str(root / "home"),
        VEXPORT_MEDIA_ROOTS=str(src.parent),
        VEXPORT_INBOX_MIN_AGE="0",
        VEXPORT_OWNERS=_no_hourly_limit(root),
    )
    os.environ.pop("DAGSTER_HOME", None)
    try:
        home = Home(root / "home").ensure()
        for i in range(files):
            (home.inbox / f"c{i:05d}.yaml").write_text(
                f"id: c{i:05d}\nsource: {src}\ntargets:\n  - preset: web_720p\n"
            )  # fmt: skip
        ticks = []
        for _ in range(RUNS):
            shutil.rmtree(home.registry)
            home.ensure()
            for sub in ("accepted", "rejected"):  # back into the inbox for the next run
                for p in (home.inbox / sub).glob("*.yaml") if (home.inbox / sub).is_dir() else []:
                    p.rename(home.inbox / p.name)
            seconds, requested = _one_tick(home.root, files)
            ticks.append(seconds)
            print(f"  sensor tick over {files} files: {seconds:.2f} s, {requested} runs requested", flush=True)

        # `vexport list`: registry records and one run each in the instance
        from vexport_pipeline.defs.instance import ensure_dagster_home
        from vexport_pipeline.defs.jobs import EXPORT_TAG, run_tags

        shutil.rmtree(home.registry)
        home.ensure()
        comp = parse_composition({"id": "l0", "source": str(src), "targets": [{"preset": "web_720p"}]})
        for i in range(exports):
            registry.register(home, comp.model_copy(update={"id": f"l{i:05d}"}), src)
        ensure_dagster_home()
        tags = run_tags(comp)
        with dg.DagsterInstance.get() as instance:
            for i in range(exports):
                instance.add_run(
                    dg.DagsterRun(job_name="export_job", run_id=f"{i:08d}-0000-0000-0000-000000000000",
                                  status=dg.DagsterRunStatus.SUCCESS, tags={**tags, EXPORT_TAG: f"l{i:05d}"})
                )  # fmt: skip
        env = {**os.environ}
        lists = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            out = subprocess.run([VEXPORT, "list", "--json", "--limit", "50"], env=env, capture_output=True, text=True)
            lists.append(time.perf_counter() - t0)
            assert out.returncode == 0, out.stderr
            print(f"  vexport list over {exports} exports: {lists[-1]:.2f} s", flush=True)
        t0 = time.perf_counter()
        subprocess.run([VEXPORT, "--help"], env=env, capture_output=True, check=True)
        startup = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tick, listing = _median(ticks), _median(lists)
    return {
        "source_s": 5,
        "files": files,
        "exports": exports,
        "times": {
            "sensor tick": {"median_s": tick, "runs_s": [round(x, 3) for x in ticks]},
            "vexport list": {"median_s": listing, "runs_s": [round(x, 3) for x in lists]},
        },
        "vexport_help_s": round(startup, 3),
        "goals": {f"sensor tick over {files} files <= 2 s": tick <= 2, f"list over {exports} <= 1 s": listing <= 1},
    }
