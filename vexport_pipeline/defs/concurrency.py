"""Waiting for a pool slot (the `gpu` pool) in an in-process run, the way `vexport export` runs.

Dagster 1.13's in-process executor busy-waits for a slot: `interval_to_next_pending_claim_check`
returns `min([0, ...])`, never more than 0, so `sleep_til_ready` never sleeps and the waiting process
spins a core (upstream pull request 20367 found this and was closed unmerged). The captured Ctrl-C is
only looked at when a step starts, so a waiting export could not be stopped either. `patch()` fixes both
and says which run holds the slot, once when the wait starts and then every minute. It changes two
private methods, so it checks they are still there and does nothing (with a warning) if they are not.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("vexport")
REPEAT_S = 60.0


def holders(instance, pool: str) -> str:
    """Who holds `pool`'s slots, for a person: export, run and process of each claim."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    named = []
    for run_id in sorted(info.active_run_ids):
        run = instance.get_run_by_id(run_id)
        tags = run.tags if run else {}
        who = f"export '{tags['vexport/export']}' " if "vexport/export" in tags else ""
        where = f", pid {tags['vexport/pid']}" if "vexport/pid" in tags else ""
        named.append(f"{who}(run {run_id[:8]}{where})")
    limit = f"limit {info.slot_count}" if info.slot_count is not None else "no limit set"
    return f"pool '{pool}' ({limit}) is held by {', '.join(named) or 'no run that still exists'}"


def _interval(self) -> float:
    if not self._pending_claims or not self._pending_timeouts:
        return 0.0
    return max(0.0, min(self._pending_timeouts.values()) - time.time())


def _sleep_til_ready(self) -> None:
    from dagster._core.errors import raise_execution_interrupts

    amount = self.sleep_interval()
    if amount <= 0:
        return
    _say_who_holds(self)
    with raise_execution_interrupts():  # Ctrl-C / SIGTERM stop the wait at once
        time.sleep(amount)


def _say_who_holds(active) -> None:
    ctx = active._instance_concurrency_context
    if ctx is None or not ctx.has_pending_claims():
        return
    said = active.__dict__.setdefault("_vexport_said", {})
    for step_key in ctx.pending_claim_steps():
        if time.monotonic() - said.get(step_key, -REPEAT_S) < REPEAT_S:
            continue
        said[step_key] = time.monotonic()
        step = active.get_step_by_key(step_key)
        pool = step.pool or step.tags.get("dagster/concurrency_key", "?")
        try:
            message = holders(ctx._instance, pool)
        except Exception as exc:  # saying who holds it must never break the wait
            message = f"pool '{pool}' is full ({type(exc).__name__} finding who holds it)"
        log.warning("%s waits for a slot: %s; Ctrl-C stops waiting", step_key, message)


def patch() -> bool:
    from dagster._core.execution.plan.active import ActiveExecution
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    if not (
        callable(getattr(InstanceConcurrencyContext, "interval_to_next_pending_claim_check", None))
        and callable(getattr(ActiveExecution, "sleep_til_ready", None))
        and hasattr(ActiveExecution, "sleep_interval")
    ):
        log.warning("Dagster's slot wait changed; vexport's fix for its busy wait is not applied")
        return False
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = _interval
    ActiveExecution.sleep_til_ready = _sleep_til_ready
    return True
