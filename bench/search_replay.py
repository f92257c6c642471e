"""Replay the target-quality search on a table of real encodes, to compare search rules without a B5 run each.

    .venv/bin/python bench/search_replay.py                       # the rules as they are
    .venv/bin/python bench/search_replay.py ACCEPT_BELOW=1.5      # a module constant of tuning.py changed

B5's corpus (2 s, 1080p: screen, photo, grain, dark) and its ladder (x264, x265, VP9, VP8, SVT-AV1 x low,
medium, high, 720p) are searched with `tune_all` exactly as B5 runs it (a rendition cache, so each probe is the
rendition), except that each probe is looked up in `bench/.cache/search_table.json`: the CRF's real encode and its
VMAF on every frame (as validation scores these short clips). A CRF no rule visited before is encoded and scored
then, and added. Printed: probes per rendition (the CPU of a short clip's search is about one encode and one VMAF
pass per probe, B5), CPU seconds of the probes, renditions within 1.5 VMAF of the target and under the floor, and
the mean kb/s.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from run import CACHE, _b5_settings, _corpus, cpu_seconds

from vexport_pipeline.core.media import tuning
from vexport_pipeline.core.media.cache import RenditionCache
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip, Timeline
from vexport_pipeline.core.validation.vmaf import score

TABLE = CACHE / "search_table.json"


def _table_probe(table: dict, kind: str, visits: list):
    """A stand-in for `tuning._probe` that looks the encode up in `table` (encoding it on a miss)."""

    def probe(source, sample, s, crf, work, keep):
        key = f"{kind}|{s.video_codec}|{s.quality}|{s.vmaf_target:g}|{crf}"
        if key not in table:
            out = Path(work) / f"{s.label}.{crf}.{s.ext}"
            c0 = cpu_seconds()
            render_clip(source, sample, [replace(s, crf=crf, label=f"probe_{crf}")], [out])
            q = score(out, source, sample, replace(s, crf=crf), extras=False)
            table[key] = [q["vmaf_mean"], round(out.stat().st_size * 8 / sample.duration / 1000, 1),
                          round(cpu_seconds() - c0, 2)]  # fmt: skip
            TABLE.write_text(json.dumps(table, indent=0, sort_keys=True))
        visits.append((key, table[key][2]))
        return tuning.Trial(crf, table[key][0], table[key][1])

    return probe


def replay(table: dict) -> list[dict]:
    rows = []
    for kind, info in _corpus(2.0).items():
        clip = Clip(None, [(0.0, info.duration)])
        ladder = _b5_settings(info)
        visits: list = []
        tuning._probe = _table_probe(table, kind, visits)
        with tempfile.TemporaryDirectory() as tmp:
            found = tuning.tune_all(info, Timeline("single", [clip], {}), [tq for _, _, tq, _ in ladder],
                                    cache=RenditionCache(Path(tmp)), source_sha256=f"replay-{kind}")  # fmt: skip
        for (codec, tier, tq, _), t in zip(ladder, found):
            key = f"{kind}|{codec}|{tier}|{tq.vmaf_target:g}|{t.settings.crf}"
            if key not in table:  # an extrapolated CRF nobody probed: measure it as the rendition
                tuning._probe(info, clip, tq, t.settings.crf, tmp_dir(), ())
            vmaf, kbps, _ = table[key]
            cpu = sum(c for k, c in visits if k.startswith(f"{kind}|{codec}|{tier}|"))
            rows.append({"clip": kind, "codec": codec, "tier": tier, "target": tq.vmaf_target, "crf": t.settings.crf,
                         "probes": len(t.trials), "vmaf": vmaf, "kbps": kbps, "probe_cpu_s": cpu,
                         "trials": [(p.crf, p.vmaf) for p in t.trials]})  # fmt: skip
    return rows


def tmp_dir() -> str:
    return tempfile.mkdtemp(prefix="replay-")


def main() -> int:
    for arg in sys.argv[1:]:
        name, value = arg.split("=", 1)
        setattr(tuning, name, type(getattr(tuning, name))(json.loads(value)))
    table = json.loads(TABLE.read_text()) if TABLE.exists() else {}
    rows = replay(table)
    for r in rows:
        print(f"  {r['clip']:6} {r['codec']:5} {r['tier']:6} {r['target']:g}: crf {r['crf']:>2} VMAF {r['vmaf']:6.2f}"
              f" {r['kbps']:>8} kb/s  trials {r['trials']}")  # fmt: skip
    print("probes per rendition:", round(statistics.mean(r["probes"] for r in rows), 3), {
        c: round(statistics.mean(r["probes"] for r in rows if r["codec"] == c), 2) for c in dict.fromkeys(
            r["codec"] for r in rows)})  # fmt: skip
    print("probe CPU s:", round(sum(r["probe_cpu_s"] for r in rows), 1))
    print("within 1.5:", sum(abs(r["vmaf"] - r["target"]) <= 1.5 for r in rows), "of", len(rows),
          "| under the floor:", sum(r["vmaf"] < r["target"] - 2 for r in rows),
          "| mean kb/s:", round(statistics.mean(r["kbps"] for r in rows), 1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
