"""B10 on a larger machine: how chunked encoding scales with workers, without the cluster around it.

vexport splits a long clip at source keyframes into chunks that separate workers encode (each chunk video only,
rate-controlled on its own: CRF), then joins them by stream copy (`core/media/chunks.py`, `assembly.py`). On
the 2-core development machine B10 runs that through real Celery workers (bench/README.md); on a machine with
more cores (the 16-core GPU machine lent to some sessions, where nothing can be installed) this script measures
the same split with the same encoder options, each worker a process pinned to cores of its own:

    .venv/bin/python bench/chunk_scaling.py emit > spec.json           # here: vexport's options for the target
    python3 bench/chunk_scaling.py run --spec spec.json --ffmpeg F     # there: stdlib and an FFmpeg only

`run` makes a 1080p30 source (texture, grain, motion; keyframes every 2 s), encodes it whole in one process
(the unchunked reference), then chunked on 1, 2, 4 ... N workers (each worker one core: `taskset` and
`-threads 1`, so the ideal speed-up is N), joins the chunks, and checks the joined file's frame count. Parallel
efficiency = T(1 worker) / (N x T(N workers)); the join's time is reported apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def emit(target: str) -> dict:
    """vexport's video options for a chunk of `target` on a 1080p30 source (run where vexport is installed)."""
    from vexport_pipeline.core.media.chunks import chunk_settings
    from vexport_pipeline.core.media.commands import container_args, video_args
    from vexport_pipeline.core.spec.composition import Target
    from vexport_pipeline.core.spec.presets import PresetBook

    sys.path.insert(0, str(Path(__file__).parent))
    from run import source  # the benchmarks' own 1080p30 source recipe, probed

    with contextlib.redirect_stdout(sys.stderr):  # its progress lines; stdout is the spec
        info = source(1920, 1080, 6)
    s = chunk_settings(PresetBook.load().resolve(Target(preset=target), info))
    opts = {**video_args(s), **container_args(s)}
    options = [x for k, v in opts.items() for x in (f"-{k}", str(v))]
    return {"target": target, "size": [s.width, s.height], "options": options}


def _run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _frames(ffmpeg: str, path: Path) -> int:
    out = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v", "-c", "copy", "-f",
                          "null", "-"], capture_output=True, text=True).stderr  # fmt: skip
    last = [ln for ln in out.replace("\r", "\n").splitlines() if ln.startswith("frame=")][-1]
    return int(last.split("=")[1].split()[0])


def run(spec: dict, ffmpeg: str, seconds: int, chunk_s: float, workers: list[int], work: Path, gop_s: float,
        quick: bool = False) -> dict:  # fmt: skip
    src = work / "source.mp4"
    _run([ffmpeg, "-y", "-f", "lavfi", "-i", f"testsrc2=s=1920x1080:r=30:d={seconds}", "-f", "lavfi", "-i",
          "mandelbrot=s=1920x1080:r=30", "-filter_complex", "[0][1]blend=all_mode=average,noise=alls=6:allf=t",
          "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", str(round(30 * gop_s)),
          "-pix_fmt", "yuv420p", str(src)])  # fmt: skip
    count = round(seconds / chunk_s)
    cuts = [round(k * chunk_s, 3) for k in range(count)] + [seconds]
    chunks = list(zip(cuts, cuts[1:]))
    w, h = spec["size"]

    def encode(a: float, b: float, out: Path, core: int | None) -> list[str]:
        pin = ["taskset", "-c", str(core)] if core is not None else []
        threads = ["-threads", "1"] if core is not None else []
        return [*pin, ffmpeg, "-y", "-nostdin", "-ss", str(a), "-to", str(b), "-i", str(src), "-map", "0:v",
                "-vf", f"scale={w}:{h}", *threads, *spec["options"], str(out)]  # fmt: skip

    cores = os.cpu_count() or 1
    result = {"source_s": seconds, "chunk_s": chunk_s, "chunks": len(chunks), "cores": cores, "runs": {}}
    if not quick:
        result["whole_all_cores_s"] = round(_run(encode(0, seconds, work / "whole.mp4", None)), 2)
    for n in workers:
        outs = [work / f"n{n}_k{k}.mp4" for k in range(len(chunks))]

        def worker(i: int, n: int = n, outs: list[Path] = outs) -> None:
            for k in range(i, len(chunks), n):  # worker i: every n-th chunk, one after another, on core i
                _run(encode(*chunks[k], outs[k], i))

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(worker, range(n)))
        encode_s = time.perf_counter() - t0
        listing = work / f"n{n}.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in outs))
        joined = work / f"n{n}.mp4"
        join_s = _run([ffmpeg, "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined)])
        result["runs"][n] = {"encode_s": round(encode_s, 2), "join_s": round(join_s, 2),
                             "frames": _frames(ffmpeg, joined), "expected_frames": 30 * seconds}  # fmt: skip
        print(f"{n} worker(s): {encode_s:.1f} s encode, {join_s:.2f} s join", flush=True)
    t1 = result["runs"][workers[0]]["encode_s"] * workers[0]  # efficiency relative to the fewest workers run
    for n, r in result["runs"].items():
        r["efficiency"] = round(t1 / (n * r["encode_s"]), 3)
        r["realtime_factor"] = round(seconds / (r["encode_s"] + r["join_s"]), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("emit")
    e.add_argument("--target", default="youtube_1080p")
    r = sub.add_parser("run")
    r.add_argument("--spec", required=True)
    r.add_argument("--ffmpeg", default="ffmpeg")
    r.add_argument("--seconds", type=int, default=60)
    r.add_argument("--chunk", type=float, default=4, help="chunk seconds (a multiple of --gop: cuts at keyframes)")
    r.add_argument("--gop", type=float, default=2, help="the source's keyframe interval, seconds")
    r.add_argument("--no-whole", action="store_true", help="skip the unchunked all-cores encode")
    r.add_argument("--workers", default="1,2,4,8,16")
    args = parser.parse_args()
    if args.cmd == "emit":
        print(json.dumps(emit(args.target), indent=1))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        spec = json.loads(Path(args.spec).read_text())
        workers = [int(x) for x in args.workers.split(",")]
        result = run(spec, args.ffmpeg, args.seconds, args.chunk, workers, Path(tmp), args.gop, args.no_whole)
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
