"""`vexport list`, `status`, `cancel`, `reexport`: watching and steering exports (argument parsing and output
over the core and the Dagster instance)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

import click

from vexport_pipeline.cli.output import fail, write_json
from vexport_pipeline.core.errors import InputError, VexportError

WATCH_EVERY_S = 1.0


def _instance():
    import dagster as dg

    from vexport_pipeline.defs.instance import ensure_dagster_home

    ensure_dagster_home()
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
    from vexport_pipeline.defs.operations.runs import list_rows

    try:
        rows = history.select(list_rows(_instance()), owner=owner, status=status, since=since)
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
@click.option("--watch", is_flag=True, help="Draw a progress bar until the run ends.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_cmd(export_id, watch, as_json) -> None:
    """Stage, percent and times of EXPORT_ID's latest run (without EXPORT_ID: the exports running now)."""
    from vexport_pipeline.core import history
    from vexport_pipeline.defs.operations.runs import list_rows, status

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


COMMANDS: list = [list_cmd, status_cmd, cancel_cmd, reexport_cmd]
