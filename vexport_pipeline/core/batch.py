"""Batches (`vexport batch FILE`): one manifest that launches an export per item. The batch model, the expansion
of its items (composition files, inline compositions, or a folder or glob of videos) into compositions checked
as `vexport submit` checks one, the record of what was admitted, and the aggregate progress of its runs. The
Dagster side (queueing runs, reading them back) is `defs/operations/batch.py`.

```yaml
id: spring-launch                 # optional; default: the file name and the time
defaults: {owner: alice, targets: [{preset: tiktok}]}   # composition fields every item shares
items:                            # composition files (relative to this file) or inline compositions
  - teaser.yaml
  - {id: cutdown, source: media/long.mov, segments: [{start: 0, end: 15}]}
# or, instead of items:  videos: media/*.mov   (a folder or a glob: each video with the profile in defaults)
```
"""

from __future__ import annotations

import glob
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vexport_pipeline.core import history, owners
from vexport_pipeline.core.errors import InputError, VexportError
from vexport_pipeline.core.files import write_atomically
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.intake.inbox import VIDEO_EXTS, admit, default_profile
from vexport_pipeline.core.settings import Home, MediaPolicy
from vexport_pipeline.core.spec.composition import ID_PATTERN, Composition
from vexport_pipeline.core.spec.loading import (
    field_problems,
    parse_composition,
    read_manifest,
    resolve_path,
    resolve_source,
    slug,
)

MAX_ITEMS = 1000
# An inline item's export id is the batch's id and `-N`: the batch id leaves room for `-1000` within an id's 63.
MAX_ID = 63 - len(f"-{MAX_ITEMS}")
OWN = ("id", "source")  # every item has its own: `defaults` may set any other composition field
SHARED = sorted(set(Composition.model_fields) - set(OWN))
# how `status --batch` counts items: not run yet, the run statuses of `history`, refused before any run
STATUSES = ("pending", "queued", "started", "canceling", "success", "failure", "canceled", "refused")
FAILED = ("failure", "canceled", "refused")


class Batch(BaseModel):
    """A batch manifest: composition fields shared by every item, and either `items` or `videos`."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN, max_length=MAX_ID)
    defaults: dict[str, Any] = Field(default_factory=dict)
    items: list[Any] | None = Field(default=None, max_length=MAX_ITEMS)  # each is checked alone (`Item`)
    videos: str | None = Field(default=None, min_length=1, max_length=4096)

    @field_validator("defaults")
    @classmethod
    def _shared_fields(cls, value: dict) -> dict:
        for key in value:
            if key in OWN:
                raise ValueError(f"{key!r} cannot be shared: each item has its own")
            if key not in SHARED:
                raise ValueError(f"{key!r} is not a composition field (one of {', '.join(SHARED)})")
        return value

    @model_validator(mode="after")
    def _items_or_videos(self) -> Batch:
        if (self.items is None) == (self.videos is None):
            raise ValueError("give either `items:` (compositions) or `videos:` (a folder or glob), not both or neither")
        return self


@dataclass(frozen=True)
class Item:
    """One entry of a batch before it is checked: `label` is how every report names it."""

    label: str
    default_id: str
    data: dict | None = None  # an inline composition, or a video's id and source
    file: str | None = None  # a composition file, as the batch names it (read when the item is checked)
    problem: str | None = None  # an entry that is neither


@dataclass(frozen=True)
class Plan:
    """A batch file, read and expanded: its id, the fields its items share and the items."""

    id: str
    file: Path
    defaults: dict
    items: list[Item]
    videos: bool

    @property
    def base(self) -> Path:
        """The folder that the batch's relative paths (items, videos, inline sources) start from."""
        return self.file.parent


def load(path: Path, now: float | None = None) -> Plan:
    """Read a batch file with the composition's safe loader and limits; refuse (exit 2) a bad file, an unknown
    key (named with its field path) or a batch without items. The items themselves are checked one by one."""
    path = Path(path).resolve()
    data = read_manifest(path)
    if not isinstance(data, dict):
        raise InputError("a batch is a mapping with `items:` or `videos:`", where=str(path), code="batch_invalid")
    try:
        batch = Batch.model_validate(data)
    except ValidationError as err:
        problems = field_problems(err, list(Batch.model_fields))
        raise InputError("invalid batch\n  " + "\n  ".join(problems), where=str(path), code="batch_invalid") from None
    # made up: the file's name, the time and a random tag (two launches of one file in one second are two batches)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{secrets.token_hex(2)}"
    batch_id = batch.id or f"{slug(path.stem)[: MAX_ID - len(stamp) - 1].rstrip('-_')}-{stamp}"
    if batch.videos:
        items = _videos(batch.videos, path.parent)
    else:
        items = [_item(i, raw, batch_id) for i, raw in enumerate(batch.items or [])]
    if not items:
        found = f": {batch.videos!r} holds no video ({', '.join(sorted(VIDEO_EXTS))})" if batch.videos else ""
        raise InputError(f"the batch has no items{found}", where=str(path), code="batch_empty")
    return Plan(batch_id, path, batch.defaults, items, bool(batch.videos))


def _item(index: int, raw: Any, batch_id: str) -> Item:
    label = f"items[{index}]"
    if isinstance(raw, str) and raw:
        return Item(f"{label} ({raw})", Path(raw).stem, file=raw)
    if isinstance(raw, dict):
        return Item(label, f"{batch_id}-{index + 1}", data=raw)
    return Item(label, "", problem="expected a composition file (a path) or an inline composition (a mapping)")


def _videos(pattern: str, base: Path) -> list[Item]:
    """Every video a folder holds, or that a glob matches, relative to the batch file's folder (absolute where
    the pattern is). Hidden names are left out; where a match leads is checked per item, as a source."""
    if (base / pattern).is_dir():
        pattern = str(Path(glob.escape(pattern)) / "*")
    names = [n for n in sorted(glob.glob(pattern, root_dir=base)) if Path(n).suffix.lower() in VIDEO_EXTS]
    if len(names) > MAX_ITEMS:
        raise InputError(f"{len(names)} videos, more than {MAX_ITEMS} a batch", where="videos", code="batch_invalid")
    return [Item(f"videos: {n}", slug(Path(n).stem), data={"id": slug(Path(n).stem), "source": n}) for n in names]


@dataclass
class Outcome:
    """What became of one item: `admitted` (registered; its run is launched next), `refused` (the item is bad,
    `errors` say why), `failure` (a good item whose run could not be launched) or `canceled` (not run: the
    batch running here was interrupted)."""

    item: str
    export_id: str | None = None
    status: str = "admitted"
    errors: list[dict] = field(default_factory=list)
    record: registry.Registered | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"item": self.item, "export_id": self.export_id, "status": self.status, "errors": self.errors}


def admit_all(plan: Plan, home: Home, policy: MediaPolicy, busy: Callable[[str], str | None]) -> list[Outcome]:
    """Check every item as `vexport submit` checks one (composition, source inside the allowed folders, the
    owner's hourly rate, plan-time refusals) and register the good ones. Each item is checked in its own guard:
    a bad one is reported and never stops the others. `busy(export_id)` names a run still working on an id."""
    out: list[Outcome] = []
    taken: dict[str, str] = {}
    usage = owners.Usage.read(home)
    for item in plan.items:
        outcome = Outcome(item.label)
        try:
            comp, base, manifest = _composition(plan, item, policy)
            outcome.export_id = comp.id
            holder = taken.get(comp.id) or busy(comp.id)
            if holder:
                raise InputError(
                    f"export id {comp.id!r} is already in use by {holder}; give the item another id",
                    where=item.label,
                    code="export_id_busy",
                )
            usage.check(comp.owner)
            source = resolve_source(comp, base, policy)
            admit(comp, source)
            outcome.record = registry.register(home, comp, source, manifest=manifest, via="batch", checked=True)
            taken[comp.id] = item.label
            usage.add(comp.owner)
        except VexportError as exc:
            outcome.status, outcome.errors = "refused", [exc.as_dict()]
        except Exception as exc:  # a bug in one item never stops the others: it is reported as refused
            message = f"{item.label}: could not be checked ({type(exc).__name__}: {str(exc)[:300]})"
            outcome.status, outcome.errors = "refused", [{"code": "internal_error", "message": message}]
        out.append(outcome)
    return out


def _composition(plan: Plan, item: Item, policy: MediaPolicy) -> tuple[Composition, Path, Path]:
    """The item's composition (its own fields over the batch's defaults, over the default profile for videos),
    the folder its relative source starts from, and the file it came from (what `reexport` resolves against)."""
    if item.problem:
        raise InputError(item.problem, where=item.label, code="batch_item_invalid")
    shared = {**default_profile(), **plan.defaults} if plan.videos else plan.defaults
    if item.file is None:
        comp = parse_composition({**shared, **(item.data or {})}, default_id=item.default_id)
        return comp, plan.base, plan.file
    manifest = resolve_path(item.file, plan.base, policy, where=item.label)  # inside the batch's folder or a root
    data = read_manifest(manifest)
    comp = parse_composition({**shared, **data} if isinstance(data, dict) else data, default_id=item.default_id)
    return comp, manifest.parent, manifest


# the record of a batch, and its progress


def folder(home: Home) -> Path:
    return home.root / "batches"


def save(home: Home, plan: Plan, outcomes: list[Outcome]) -> None:
    """What `status --batch` reads: every item with its export id and, if it was refused, why."""
    data = {"id": plan.id, "file": str(plan.file), "created_at": time.time(), "items": [o.to_dict() for o in outcomes]}
    folder(home).mkdir(parents=True, exist_ok=True)
    write_atomically(folder(home) / f"{plan.id}.json", json.dumps(data, indent=2))


def read(home: Home, batch_id: str) -> dict:
    path = folder(home) / f"{batch_id}.json"
    if not re.fullmatch(ID_PATTERN, batch_id) or not path.is_file():
        raise InputError(f"no batch {batch_id!r} is known", where="--batch", code="batch_unknown")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class RunState:
    """The batch's newest run of one export, as the Dagster side reads it (statuses as `history` names them)."""

    run_id: str
    status: str
    stage: str | None  # None while queued
    percent: float
    errors: list[dict] = field(default_factory=list)


def aggregate(record: dict, runs: dict[str, RunState]) -> dict:
    """Counts per status, one percent for the whole batch and every item's state. The percent is the mean
    over the admitted items, where an ended run counts whole (it has nothing left to do) and one not started
    yet counts nothing; `done` once no item is pending, queued or running."""
    counts = dict.fromkeys(STATUSES, 0)
    items, shares = [], []
    for o in record["items"]:
        run = runs.get(o["export_id"]) if o["status"] == "admitted" else None
        status = (run.status if run else "pending") if o["status"] == "admitted" else o["status"]
        counts[status] += 1
        if o["status"] == "admitted":
            shares.append(100.0 if status in history.ENDED else (run.percent if run else 0.0))
        items.append(
            {
                "item": o["item"],
                "export_id": o["export_id"],
                "status": status,
                "run_id": run.run_id if run else None,
                "stage": run.stage if run else None,
                "percent": run.percent if run else None,
                "errors": o["errors"] or (run.errors if run else []),
            }
        )
    active = counts["pending"] + sum(counts[s] for s in history.ACTIVE)
    return {
        "batch_id": record["id"],
        "file": record["file"],
        "created_at": record["created_at"],
        "total": len(items),
        "counts": counts,
        "percent": round(sum(shares) / len(shares), 1) if shares else 100.0,
        "done": active == 0,
        "items": items,
        "failed": [i for i in items if i["status"] in FAILED],
    }


def exit_code(summary: dict, waited: bool) -> int:
    """2 when no item could be launched; else 0 when every item was launched (with `waited`: delivered),
    1 when some were not."""
    counts = summary["counts"]
    if counts["refused"] == summary["total"]:
        return 2
    ok = counts["success"] if waited else summary["total"] - counts["refused"] - counts["failure"]
    return 0 if ok == summary["total"] else 1
