"""B10 chunked scaling (see bench/README.md): one long 1080p export split into chunks, through real Celery workers
(each with a VEXPORT_HOME of its own, handing files through a folder artifact store, as separate machines would),
on 1, 2 and 4 workers, against the same export in one process (Dagster's in-process executor).

    .venv/bin/python bench/scaling.py [--quick] [--workers 1,2,4]     # run.py runs it as B10, in a process of its own

The export: the source's renditions step only (encode jobs and the join; source and segments before it), one
youtube_1080p target at an explicit CRF (no target-quality search), chunks of VEXPORT_CHUNK_SECONDS. Each
configuration runs once; the figures are the run's wall time from launch to the joined file, the parallel
efficiency T(1 worker) / (N x T(N workers)), the join (the `assemble` step), and the real-time factor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CHUNK_S = 10
SELECTION = ["source", "segments", "renditions"]


def _step_seconds(instance, run_id: str, prefix: str) -> float:
    return round(sum((s.end_time or 0) - (s.start_time or 0) for s in instance.get_run_step_stats(run_id)
                     if s.step_key.startswith(prefix)), 2)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 30 s source instead of 60 s")
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    seconds = 30 if args.quick else 60
    root = Path(tempfile.mkdtemp(prefix="b10-", dir=BENCH / ".cache"))
    os.environ.update(VEXPORT_HOME=str(root / "home"), VEXPORT_CHUNK_SECONDS=str(CHUNK_S), VEXPORT_HARDWARE="off")
    os.environ.pop("DAGSTER_HOME", None)
    sys.path.insert(0, str(BENCH))
    import dagster as dg
    from run import source  # the benchmarks' 1080p30 source recipe (texture, grain, motion), cached

    from vexport_pipeline.core.intake import registry
    from vexport_pipeline.core.settings import Home
    from vexport_pipeline.core.spec.loading import parse_composition
    from vexport_pipeline.defs import cluster

    info = source(1920, 1080, seconds)
    os.environ["VEXPORT_MEDIA_ROOTS"] = str(Path(info.path).parent)
    home = Home(root / "home").ensure()
    comp = parse_composition({"id": "b10", "source": info.path, "export_type": "single",
                              "targets": [{"preset": "youtube_1080p", "crf": 20}]})  # fmt: skip
    out = {"source_s": seconds, "chunk_s": CHUNK_S, "cpus": os.cpu_count(), "runs": {}}
    try:
        registry.register(home, comp, Path(info.path))
        os.environ["VEXPORT_EXECUTOR"] = "inprocess"
        with dg.instance_for_test() as instance:  # the reference: the same chunks, one after another, one process
            t0 = time.perf_counter()
            with cluster.execute_export(instance, "b10", SELECTION) as result:
                wall = time.perf_counter() - t0
                assert result.success
                join = _step_seconds(instance, result.run_id, "renditions.assemble")
                out["in_process"] = {"wall_s": round(wall, 2), "join_s": join}
        print(f"  in-process: {out['in_process']['wall_s']:.1f} s", flush=True)
        shutil.rmtree(home.work / "b10")
        shutil.rmtree(home.root / "cache", ignore_errors=True)
        for n in [int(x) for x in args.workers.split(",")]:
            os.environ.update(VEXPORT_EXECUTOR="celery", VEXPORT_ARTIFACTS=(root / f"artifacts{n}").as_uri())
            registry.register(home, comp, Path(info.path))  # into this configuration's artifact store too
            with dg.instance_for_test() as instance, cluster.celery_workers(n, root / f"workers{n}"):
                instance.event_log_storage.set_concurrency_slots("gpu", n)  # every encode pool slot a worker
                t0 = time.perf_counter()
                with cluster.execute_export(instance, "b10", SELECTION) as result:
                    wall = time.perf_counter() - t0
                    assert result.success
                    by = cluster.steps_by_worker(result)
                    chunks = {k: w for k, w in by.items() if "encode[" in k}
                    out["runs"][n] = {
                        "wall_s": round(wall, 2),
                        "join_s": _step_seconds(instance, result.run_id, "renditions.assemble"),
                        "chunks": len(chunks),
                        "workers_used": len(set(chunks.values())),
                    }
            print(f"  {n} worker(s): {out['runs'][n]}", flush=True)
            shutil.rmtree(home.work / "b10", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first = min(out["runs"])
    for n, r in out["runs"].items():
        r["efficiency"] = round(first * out["runs"][first]["wall_s"] / (n * r["wall_s"]), 3)
        r["realtime_factor"] = round(seconds / r["wall_s"], 3)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
