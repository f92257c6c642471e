"""`vexport list`, `status`, `cancel`, `reexport`, `batch`: watching and steering exports (argument parsing and
output over the core and the Dagster instance)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from vexport_pipeline.cli.output import fail, write_json
from vexport_pipeline.core.errors import InputError, VexportError

WATCH_EVERY_S = 1.0


def _dagster_home() -> Path:
    from vexport_pipeline.defs.instance import ensure_dagster_home

    try:
        return ensure_dagster_home()
    except VexportError as exc:
        fail(exc)


def _instance():
    import dagster as dg

    _dagster_home()
    return dg.DagsterInstance.get()


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command("list")
@click.option("--owner", help="Only this owner's exports.")
@click.option("--status", help="Only exports whose latest run is: queued, started, success, failure, canceled.")
@click.option("--since", help="Only exports registered or run within this long: 45s, 90m, 24h, 7d.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Rows a page.")
@click.option("--page", "page_no", default=1, show_default=True, type=click.IntRange(1), help="Which page.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_cmd(owner, status, since, limit, page_no, as_json) -> None:
    """Past and current exports, newest first: owner, latest run status, delivered version."""
    from vexport_pipeline.core import history
    from vexport_pipeline.defs.operations import runstore

    runs = runstore.latest_runs(_dagster_home())  # without importing Dagster, where the storage allows
    if runs is None:
        import dagster as dg

        from vexport_pipeline.defs.operations.runs import latest_runs

        runs = latest_runs(dg.DagsterInstance.get())  # the home is set up above
    try:
        rows = history.select(runstore.rows(runs), owner=owner, status=status, since=since)
    except ValueError as exc:
        fail(InputError(str(exc), where="--since"))
    shown = history.page(rows, limit, page_no)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in shown], indent=2))
        return
    if not shown:
        click.echo("no exports" + (f" on page {page_no}" if rows else ""))
        return
    table = [("id", "owner", "status", "delivered", "version", "registered", "updated")]
    for r in shown:
        table.append(
            (r.id, r.owner, r.status, r.delivered or "-", r.version or "-", _when(r.registered_at), _when(r.updated_at))
        )
    click.echo(_table(table))
    pages = max(1, -(-len(rows) // limit))
    if pages > 1:
        click.echo(f"page {page_no} of {pages} ({len(rows)} exports); --page N for more")


def _status_text(data: dict) -> str:
    lines = [f"export {data['export_id']}: {data['status']}"]
    if data.get("run_id"):
        lines.append(f"run {data['run_id']} ({data.get('source') or 'daemon'})")
        eta = f", about {data['eta_s']:.0f} s left" if data.get("eta_s") is not None else ""
        lines.append(
            f"stage {data['stage']}, {data['percent']:.0f}% ({data['steps_done']}/{data['steps_total']} steps){eta}"
        )
        lines.append(f"started {_when(data.get('started'))}, ended {_when(data.get('ended'))}")
    summary = data.get("summary")
    if summary:
        lines.append(f"delivered version {data['version']}: {summary.get('status')}")
        for r in summary.get("renditions", []):
            lines.append(f"  {r.get('target')}: {r.get('path') or r.get('uri')}")
    return "\n".join(lines)


def _watch(instance, export_id: str) -> dict:
    """Redraw a progress bar every second until the run ends; the bar never goes backwards."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vexport_pipeline.core import history
    from vexport_pipeline.defs.operations.runs import status

    best = 0.0
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"))
    with Progress(*columns, TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task(export_id, total=100)
        while True:
            data = status(instance, export_id)
            best = max(best, data.get("percent") or 0.0)
            data["percent"] = best
            eta = f" ~{data['eta_s']:.0f}s left" if data.get("eta_s") is not None else ""
            bar.update(task, completed=best, description=f"{export_id} [{data.get('stage') or data['status']}]{eta}")
            if data["status"] in history.ENDED or data["status"] == "registered":
                return data
            time.sleep(WATCH_EVERY_S)


@click.command("status")
@click.argument("export_id", required=False)
@click.option("--batch", "batch_id", help="The runs of this batch instead: counts, overall percent, failed items.")
@click.option("--watch", is_flag=True, help="Draw a progress bar until the run (or the batch) ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_cmd(export_id, batch_id, watch, as_json) -> None:
    """Stage, percent and times of EXPORT_ID's latest run (without EXPORT_ID: the exports running now)."""
    from vexport_pipeline.core import history
    from vexport_pipeline.defs.operations.runs import list_rows, status

    if batch_id:
        if export_id:
            fail(InputError("give an EXPORT_ID or --batch, not both", where="--batch"))
        _batch_status(batch_id, watch, as_json)
        return
    instance = _instance()
    if not export_id:
        active = [r for r in list_rows(instance) if r.status in history.ACTIVE]
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in active], indent=2))
        else:
            click.echo("\n".join(f"{r.id}  {r.owner}  {r.status}" for r in active) or "nothing is queued or running")
        return
    try:
        data = _watch(instance, export_id) if watch else status(instance, export_id)
    except VexportError as exc:
        fail(exc)
    click.echo(json.dumps(data, indent=2) if as_json else _status_text(data))


@click.command("cancel")
@click.argument("export_id")
def cancel_cmd(export_id) -> None:
    """Stop EXPORT_ID's queued or running run, however it was started; nothing of it is delivered."""
    from vexport_pipeline.defs.operations.runs import cancel

    message, code = cancel(_instance(), export_id)
    click.echo(message, err=code != 0)
    sys.exit(code)


def _reexport(export_id: str) -> tuple[dict, int]:
    """Run a past export again from its stored composition, in-process as `vexport export` does (a new version,
    same id; an unchanged export reuses its identical delivered version). Returns (summary, exit code)."""
    from vexport_pipeline.cli.export import execute
    from vexport_pipeline.core.delivery import summary
    from vexport_pipeline.defs.instance import ensure_dagster_home
    from vexport_pipeline.defs.operations.runs import reprepare

    ensure_dagster_home()
    try:
        record = reprepare(export_id)
    except VexportError as exc:
        return summary.build(export_id, "refused", errors=[exc.as_dict()]), exc.exit_code
    except Exception as exc:  # a bug: the summary says what, never a traceback
        error = {"code": "internal_error", "message": f"{export_id}: {type(exc).__name__}: {str(exc)[:300]}"}
        return summary.build(export_id, "failed", errors=[error]), 1

    return execute(record, {"vexport/reexport": "true"})


@click.command("reexport")
@click.argument("export_id")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the summary JSON here.")
def reexport_cmd(export_id, json_out) -> None:
    """Run EXPORT_ID again from its stored composition: a new version, the same id."""

    from vexport_pipeline.cli import summary_table

    data, code = _reexport(export_id)
    if json_out:
        write_json(json_out, data)
    click.echo(summary_table(data))
    sys.exit(code)


def _batch_text(data: dict) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in data["counts"].items() if n)
    lines = [f"batch {data['batch_id']}: {data['percent']:.0f}% ({counts})"]
    table = [("item", "export", "status", "stage", "percent")]
    for i in data["items"]:
        percent = "-" if i["percent"] is None else f"{i['percent']:.0f}%"
        table.append((i["item"], i["export_id"] or "-", i["status"], i["stage"] or "-", percent))
    lines.append(_table(table))
    for i in data["failed"]:
        for e in i["errors"]:
            lines.append(f"{i['item']}: {i['status']} [{e['code']}] " + e["message"].replace("\n", "\n  "))
    return "\n".join(lines)


def _watch_batch(instance, batch_id: str) -> dict:
    """Redraw the batch's bar (on stderr) every second until no item is pending, queued or running; the bar
    never goes backwards."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vexport_pipeline.core import history
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.defs.operations.batch import status

    best = 0.0
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"))
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(batch_id, total=100)
        while True:
            data = status(instance, current().paths, batch_id)
            best = data["percent"] = max(best, data["percent"])
            ended = data["total"] - data["counts"]["pending"] - sum(data["counts"][s] for s in history.ACTIVE)
            bar.update(task, completed=best, description=f"batch {batch_id} [{ended}/{data['total']} ended]")
            if data["done"]:
                return data
            time.sleep(WATCH_EVERY_S)


def _batch_status(batch_id: str, watch: bool, as_json: bool) -> None:
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.defs.operations.batch import status

    instance = _instance()
    try:
        data = _watch_batch(instance, batch_id) if watch else status(instance, current().paths, batch_id)
    except VexportError as exc:
        fail(exc)
    click.echo(json.dumps(data, indent=2) if as_json else _batch_text(data))


def _run_here(batch_id: str, admitted: list) -> list:
    """The admitted items one after another in this process, as `vexport export` runs one. An interrupt (Ctrl-C,
    SIGTERM, `vexport cancel` of the item running) stops the batch; returns the items it left unrun."""
    from vexport_pipeline.cli.export import execute
    from vexport_pipeline.defs.operations.batch import BATCH_TAG

    for n, item in enumerate(admitted, 1):
        click.echo(f"[{n}/{len(admitted)}] {item.export_id}: running here", err=True)
        data, _ = execute(item.record, {BATCH_TAG: batch_id})
        click.echo(f"[{n}/{len(admitted)}] {item.export_id}: {data['status']}", err=True)
        if any(e["code"] == "interrupted" for e in data["errors"]):
            click.echo("interrupted: the rest of the batch is not run", err=True)
            return admitted[n:]
    return []


def _launch(plan, wait: bool) -> tuple[dict, int]:
    """Check every item, register the good ones and launch them: queued for the daemon, or with `wait` and no
    daemon running, here one after another. Returns (the batch's status, exit code)."""
    from vexport_pipeline.core import batch
    from vexport_pipeline.core.errors import ConfigError
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.defs.jobs import reap_dead_runs
    from vexport_pipeline.defs.operations import batch as runs

    instance = _instance()
    daemon = runs.daemon_running(instance)
    here = wait and not daemon
    if not here and not runs.has_queue(instance):
        raise ConfigError("this Dagster instance has no run queue (see its run_coordinator); --wait runs it here")
    settings = current()
    home = settings.paths.ensure()
    reap_dead_runs(instance)  # a run whose process was killed must not hold its export id
    outcomes = batch.admit_all(plan, home, settings.policy, lambda export_id: runs.busy(instance, export_id))
    admitted = [o for o in outcomes if o.record]
    batch.save(home, plan, outcomes)
    if admitted and here:
        unrun = _run_here(plan.id, admitted)
        for o in unrun:
            o.status, o.errors = "canceled", [{"code": "interrupted", "message": "not run: the batch was interrupted"}]
        if unrun:
            batch.save(home, plan, outcomes)
    elif admitted:
        failed = runs.queue(instance, plan.id, [o.record for o in admitted])
        for o in admitted:
            if o.export_id in failed:
                o.status, o.errors = "failure", [{"code": "launch_failed", "message": failed[o.export_id]}]
        if failed:
            batch.save(home, plan, outcomes)
        if not daemon:
            click.echo(
                "no Dagster daemon is running for this instance: the runs wait in the queue until one starts"
                " (make dev); `vexport batch --wait` runs a batch here instead",
                err=True,
            )
        elif wait:
            click.echo("waiting for the daemon to run them (Ctrl-C stops the waiting, not the runs)", err=True)
            _watch_batch(instance, plan.id)
    data = runs.status(instance, home, plan.id)
    return data, batch.exit_code(data, waited=wait)


@click.command("batch")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--wait",
    is_flag=True,
    help="Return when every item has ended: the daemon runs them if one is running, else they run here in turn.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-item results as JSON.")
def batch_cmd(file: Path, wait: bool, as_json: bool) -> None:
    """Launch an export per item of the batch FILE, tagged vexport/batch: queued for the daemon, where the fair
    queue applies. Exit 0 when every item was launched (with --wait: delivered), 1 when some were not, 2 when the
    file is bad or no item is valid."""
    from vexport_pipeline.core import batch

    try:
        data, code = _launch(batch.load(file), wait)
    except VexportError as exc:
        fail(exc)
    click.echo(json.dumps(data, indent=2) if as_json else _batch_text(data))
    if not data["done"]:
        click.echo(f"follow it with: vexport status --batch {data['batch_id']} --watch", err=True)
    sys.exit(code)


COMMANDS: list = [list_cmd, status_cmd, cancel_cmd, reexport_cmd, batch_cmd]
