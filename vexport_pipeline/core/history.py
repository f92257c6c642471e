"""History and progress of exports, without Dagster: the rows of `vexport list` (registry records joined with
the latest run of each export and the delivered version) and the stage and percent of a run, computed from
plain step events (`StepEvent`) that the Dagster side extracts from the instance."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vexport_pipeline.core.timecode import parse_ttl

DEFAULT_OWNER = "default"  # the owner of a composition that names none

# Dagster run statuses, as `vexport` names them (lower case; the not-yet-running ones are all "queued")
STATUS_NAMES = {
    "QUEUED": "queued",
    "NOT_STARTED": "queued",
    "MANAGED": "queued",
    "STARTING": "started",
    "STARTED": "started",
    "CANCELING": "canceling",
    "SUCCESS": "success",
    "FAILURE": "failure",
    "CANCELED": "canceled",
}
ENDED = {"success", "failure", "canceled"}
ACTIVE = {"queued", "started", "canceling"}


def status_name(dagster_status: str) -> str:
    """A Dagster run status (`DagsterRunStatus.value`, as the run storage keeps it) as `vexport` names it."""
    return STATUS_NAMES.get(dagster_status) or dagster_status.lower()


# Stages in order, each with the share of the whole percent where it starts and ends
STAGES = ("planning", "encoding", "validating", "delivering")
BANDS = {"planning": (0.0, 10.0), "encoding": (10.0, 85.0), "validating": (85.0, 95.0), "delivering": (95.0, 100.0)}


def stage_of(step_key: str | None) -> str:
    """The stage a step belongs to: source/segments/plan_encodes → planning, renditions.* → encoding,
    validation_report → validating, delivery (and what follows it) → delivering."""
    key = step_key or ""
    if key in ("source", "segments") or key.endswith("plan_encodes"):
        return "planning"
    if key.startswith("renditions"):
        return "encoding"
    if key.startswith("validation"):
        return "validating"
    return "delivering" if key.startswith("delivery") else "planning"


@dataclass(frozen=True)
class StepEvent:
    """One event of a run that progress cares about: `kind` is start, success, failure, skipped, output
    (a dynamic output of the encode planner: one per encode job) or progress (FFmpeg percent of `job`)."""

    kind: str
    step_key: str | None
    percent: float | None = None
    job: str | None = None


@dataclass
class Progress:
    """Where a run stands: its stage, and a percent that a caller may keep monotonic (`advance`)."""

    stage: str = "planning"
    percent: float = 0.0
    steps_done: int = 0
    steps_total: int = 0
    running: list[str] = field(default_factory=list)

    def advance(self, previous: float | None) -> Progress:
        """Never backwards: a redraw shows at least what the last one did."""
        self.percent = max(self.percent, previous or 0.0)
        return self


def progress(events: list[StepEvent], status: str, planned_steps: int = 0) -> Progress:
    """Stage and percent of a run from its step events; a run that succeeded is 100 %."""
    started, finished, succeeded, jobs, encode_pct = [], set(), set(), set(), {}
    for e in events:
        if e.kind == "start":
            started.append(e.step_key)
        elif e.kind in ("success", "failure", "skipped"):
            finished.add(e.step_key)
            if e.kind == "success":
                succeeded.add(e.step_key)
        elif e.kind == "output" and (e.step_key or "").endswith("plan_encodes"):
            jobs.add(e.job or str(len(jobs)))
        elif e.kind == "progress" and e.percent is not None:
            job = e.job or e.step_key or "?"
            encode_pct[job] = max(encode_pct.get(job, 0.0), min(100.0, e.percent))
    running = [k for k in dict.fromkeys(started) if k not in finished]
    total = max(planned_steps, len(set(started))) + max(0, len(jobs) - 1)  # encode[?] counts once in the plan
    done = Progress(steps_done=len(succeeded), steps_total=total, running=running)
    if status == "success":
        done.stage, done.percent = "done", 100.0
        return done
    last = running[-1] if running else (started[-1] if started else None)
    done.stage = stage_of(last)
    lo, hi = BANDS[done.stage]
    share = _stage_share(done.stage, started, succeeded, jobs, encode_pct)
    done.percent = round(lo + (hi - lo) * share, 1)
    return done


def eta(percent: float, elapsed_s: float) -> float | None:
    """Seconds left at the pace so far (the percent is monotonic, so this settles as the run goes); None while
    the run is still planning, where the pace says nothing about the encodes to come."""
    if percent < BANDS["encoding"][0] + 2 or percent >= 100 or elapsed_s <= 0:
        return None
    return round(elapsed_s * (100 - percent) / percent, 1)


def _stage_share(stage: str, started: list, finished: set, jobs: set, encode_pct: dict) -> float:
    """How far into its stage a run is (0..1); `finished` holds the steps that succeeded."""
    if stage == "encoding":
        encodes = [k for k in dict.fromkeys(started) if "encode[" in (k or "")]
        n = max(len(jobs), len(encodes), 1)
        measured = sum(100.0 if k in finished else 0.0 for k in encodes)
        measured = max(measured, sum(encode_pct.values()))
        assembled = 1.0 if any((k or "").endswith("assemble") for k in finished) else 0.0
        return min(1.0, 0.9 * measured / (100.0 * n) + 0.1 * assembled)
    mine = [k for k in dict.fromkeys(started) if stage_of(k) == stage]
    return 0.0 if not mine else sum(1 for k in mine if k in finished) / (len(mine) + 1)


@dataclass(frozen=True)
class RunInfo:
    """The latest run of one export, as `vexport list` and `status` show it."""

    run_id: str
    status: str
    created: float | None
    started: float | None
    ended: float | None
    owner: str | None
    source: str | None


@dataclass
class Row:
    """One export in `vexport list`."""

    id: str
    owner: str
    status: str
    run_id: str | None
    version: str | None
    delivered: str | None
    registered_at: float | None
    updated_at: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def registered(registry: Path) -> dict[str, dict]:
    """Export id → {owner, registered_at} for every registry record, read raw (fast, no validation: 10,000
    records in well under a second)."""
    out = {}
    try:
        entries = [e for e in os.scandir(registry) if e.name.endswith(".json")]  # not glob: a third of the time
    except OSError:
        return out
    for entry in entries:
        try:
            with open(entry.path, "rb") as f:
                data = json.loads(f.read())
            owner = (data.get("composition") or {}).get("owner") or DEFAULT_OWNER
            out[entry.name[:-5]] = {"owner": owner, "registered_at": data.get("registered_at")}
        except (OSError, ValueError, AttributeError):
            continue  # unreadable records are reported where they are used
    return out


def rows(records: dict[str, dict], runs: dict[str, RunInfo], delivered) -> list[Row]:
    """One row per export known to the registry or the instance, newest first. `delivered(id)` gives
    (version, summary status) of the store's current version, or (None, None)."""
    out = []
    for export_id in set(records) | set(runs):
        rec, run = records.get(export_id, {}), runs.get(export_id)
        version, state = delivered(export_id)
        status = run.status if run else ("success" if version else "registered")
        updated = (run.ended or run.started or run.created) if run else None
        out.append(
            Row(
                export_id,
                rec.get("owner") or (run.owner if run else None) or DEFAULT_OWNER,
                status,
                run.run_id if run else None,
                version,
                state,
                rec.get("registered_at"),
                updated,
            )
        )
    out.sort(key=lambda r: max(r.registered_at or 0.0, r.updated_at or 0.0), reverse=True)
    return out


def select(
    items: list[Row],
    *,
    owner: str | None = None,
    status: str | None = None,
    since: str | None = None,
    now: float | None = None,
) -> list[Row]:
    """Filter rows by owner, status and age (`since`: 45s, 90m, 24h, 7d)."""
    cutoff = (now or time.time()) - parse_ttl(since) if since else None
    out = []
    for r in items:
        if owner and r.owner != owner:
            continue
        if status and r.status != status.lower():
            continue
        if cutoff is not None and max(r.registered_at or 0.0, r.updated_at or 0.0) < cutoff:
            continue
        out.append(r)
    return out


def page(items: list, limit: int, number: int) -> list:
    """Page `number` (1-based) of `limit` items."""
    start = (max(1, number) - 1) * limit
    return items[start : start + limit]
