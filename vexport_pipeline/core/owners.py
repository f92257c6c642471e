"""Per-owner limits: how many of an owner's exports run at once, how many start an hour, how much they may store.

The YAML file the `VEXPORT_OWNERS` setting names maps owners to overrides, over a `default` entry, over the
built-in defaults (3 at once, as dagster.yaml says; 10 an hour; no quota):

```yaml
default: {concurrent: 3, exports_per_hour: 10}
alice: {concurrent: 5, quota: 50GB}          # sizes: 50GB = 50 * 10^9 bytes, 50GiB = 50 * 2^30
bob: {exports_per_hour: 2, quota: 500MB}
```

`concurrent` is enforced by Dagster's run queue (the instance's dagster.yaml gets one entry per owner that sets
it, see `defs/instance.py`); the hourly rate and the quota are checked here, before anything is started. The
rate counts registrations (`registry.registrations`): `vexport export`, `reexport` and every file the inbox
takes; `submit` also counts what it already placed in the inbox.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, TypeAdapter, ValidationError

from vexport_pipeline.core import history
from vexport_pipeline.core.errors import ConfigError, InputError, RateLimited
from vexport_pipeline.core.files import read_text_file
from vexport_pipeline.core.settings import Home, current

HOUR = 3600.0
MAX_FILE_BYTES = 256 * 1024
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"  # as a composition's `owner`


class Override(BaseModel):
    """One entry of the owners file; a field left out comes from `default`, then from the built-ins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrent: int | None = Field(default=None, ge=1, le=1000)
    exports_per_hour: int | None = Field(default=None, ge=1, le=1_000_000)
    quota: ByteSize | Literal["unlimited"] | None = None


_FILE = TypeAdapter(dict[str, Override])


@dataclass(frozen=True)
class Limits:
    """What one owner may start and store (how many run at once is the run queue's: dagster.yaml, 3)."""

    exports_per_hour: int = 10
    quota: int | None = None  # bytes; None: unlimited


@dataclass(frozen=True)
class Owners:
    """The owners file, resolved: the defaults and each named owner's overrides."""

    default: Override = field(default_factory=Override)
    named: dict[str, Override] = field(default_factory=dict)

    def limits(self, owner: str | None) -> Limits:
        """The owner's entry, over `default`, over the built-ins."""
        own = self.named.get(owner or history.DEFAULT_OWNER, Override())
        merged = {**self.default.model_dump(exclude_none=True), **own.model_dump(exclude_none=True)}
        merged.pop("concurrent", None)
        if merged.get("quota") == "unlimited":
            merged["quota"] = None
        return Limits(**merged)

    def own_concurrency(self) -> dict[str, int]:
        """Owners whose entry sets `concurrent`: each gets its own entry in the run queue's limits."""
        return {name: o.concurrent for name, o in self.named.items() if o.concurrent is not None}


_loaded: dict[tuple, Owners] = {}


def load(path: Path | None = None) -> Owners:
    """The owners file (`path`, else `VEXPORT_OWNERS`), read once per version of the file."""
    path = path or current().owners_file
    if path is None:
        return Owners()
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None  # _read names the missing file
    if (path, stamp) not in _loaded:
        _loaded[(path, stamp)] = _read(path)
    return _loaded[(path, stamp)]


def _read(path: Path) -> Owners:
    where = f"{path} (VEXPORT_OWNERS)"
    try:
        data = yaml.safe_load(read_text_file(path, MAX_FILE_BYTES, "the owners file")) or {}
    except InputError as exc:
        raise ConfigError(exc.message, where=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError(f"must map owners to limits, not {type(data).__name__}", where=where)
    problems = [
        f"{name!r}: not an owner name (letters, digits, _.@-, at most 128)"
        for name in data
        if not isinstance(name, str) or not re.match(OWNER_PATTERN, name)
    ]
    try:
        entries = _FILE.validate_python({str(k): v for k, v in data.items()})
    except ValidationError as err:
        problems += dict.fromkeys(_problem(e) for e in err.errors())  # a union reports a field twice
    if problems:
        raise ConfigError("; ".join(problems), where=where)
    named = {k: v for k, v in entries.items() if k != "default"}
    return Owners(entries.get("default", Override()), named)


def _problem(e: dict) -> str:
    """One validation error as `alice.quota: ...`: the owner and the field, in the words a person fixes."""
    loc = [str(p) for p in e["loc"] if not str(p).startswith(("literal[", "function-", "lax-", "json-"))]
    path = ".".join(loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        guess = difflib.get_close_matches(loc[-1], Override.model_fields, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else f"allowed: {', '.join(Override.model_fields)}"
        return f"{path}: unknown key ({hint})"
    if loc and loc[-1] == "quota":
        return f"{path}: {e['input']!r} is not a size such as 500MB, 50GB or 1TiB, or 'unlimited'"
    if e["type"] == "model_type":
        return f"{path}: must be a mapping of {', '.join(Override.model_fields)}"
    return f"{path}: {e['msg']}"


# the hourly rate


@dataclass
class Usage:
    """When each owner's exports of the last hour were registered (or, for `submit`, placed in the inbox)."""

    now: float
    times: dict[str, list[float]]
    owners: Owners

    @classmethod
    def read(cls, home: Home, now: float | None = None, waiting: list[tuple[str, float]] = ()) -> Usage:
        """From the registry's log, plus `waiting` (owner, time) entries not registered yet. The owners file is
        read here, once: a broken one refuses the whole pass, not each file in turn."""
        from vexport_pipeline.core.intake import registry  # here: the instance's set-up reads owners without it

        now = time.time() if now is None else now
        times: dict[str, list[float]] = {}
        for owner, at in [*registry.registrations(home, now - HOUR), *waiting]:
            if at > now - HOUR:
                times.setdefault(owner, []).append(at)
        return cls(now, times, load())

    def add(self, owner: str | None) -> None:
        self.times.setdefault(owner or history.DEFAULT_OWNER, []).append(self.now)

    def check(self, owner: str | None) -> None:
        """Refuse (`rate_limited`) an owner who has started `exports_per_hour` exports in the last hour, saying
        when the next slot opens: when enough of them are an hour old."""
        owner = owner or history.DEFAULT_OWNER
        limit = self.owners.limits(owner).exports_per_hour
        recent = sorted(self.times.get(owner, []))
        if len(recent) < limit:
            return
        opens = recent[len(recent) - limit] + HOUR
        minutes = max(1, math.ceil((opens - self.now) / 60))
        raise RateLimited(
            f"{len(recent)} export(s) in the last hour reach the limit of {limit} an hour (exports_per_hour); the"
            f" next slot opens at {time.strftime('%H:%M', time.localtime(opens))} (in {minutes} min)",
            where=f"owner {owner}",
            opens_at=opens,
        )


# the storage quota


def stored_bytes(home: Home, owner: str) -> int:
    """Bytes the owner's delivered versions hold, in the local store and its archive."""
    from vexport_pipeline.core import retention  # here: the instance's set-up reads owners without it

    mine = {eid for eid, rec in history.registered(home.registry).items() if rec["owner"] == owner}
    return retention.stored_bytes(home, mine)


def check_quota(home: Home, owner: str | None, estimate: int) -> None:
    """Refuse (`quota_exceeded`) an export whose estimated size would take the owner past their quota."""
    owner = owner or history.DEFAULT_OWNER
    quota = load().limits(owner).quota
    if quota is None:
        return
    used = stored_bytes(home, owner)
    if used + estimate <= quota:
        return
    raise InputError(
        f"{_human(used)} stored + about {_human(estimate)} for this export is over the quota of {_human(quota)};"
        " delete old versions (retention) or raise the owner's quota in VEXPORT_OWNERS",
        where=f"owner {owner}",
        code="quota_exceeded",
    )


def _human(n: int) -> str:
    return ByteSize(n).human_readable(decimal=True)
