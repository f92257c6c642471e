"""`vexport retention`, `vexport restore`: the retention job from the shell (argument parsing and output over
`core.retention`; the daily schedule runs the same through the `retention` asset)."""

from __future__ import annotations

import json
import sys

import click

from vexport_pipeline.cli.output import fail
from vexport_pipeline.core.errors import VexportError


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@click.command("retention")
@click.option("--now", "now_", is_flag=True, help="Run it now, once (what the daily schedule does).")
@click.option("--dry-run", is_flag=True, help="Print what would be archived, deleted and cleaned; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def retention_cmd(now_: bool, dry_run: bool, as_json: bool) -> None:
    """Archive versions past archive_after, delete those past delete_after (links revoked, the summary kept),
    never touch a legal hold, and clean old work folders and cache files (in the artifact store too)."""
    from vexport_pipeline.core import artifacts, retention
    from vexport_pipeline.core.delivery.events import EventStore
    from vexport_pipeline.core.settings import current, destinations

    settings = current()
    try:
        events = None if dry_run else EventStore(settings.events_url or settings.paths.events_db)
        revoke = (lambda e, v: events.revoke(export_id=e, version=v)) if events else None
        stores = retention.object_stores(destinations(settings))
        store = artifacts.configured()  # where workers hand each other files: cleaned like the work area
        report = retention.run(settings.paths, revoke=revoke, dry_run=dry_run, stores=stores, artifacts=store)
    except VexportError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        verb = "would" if dry_run else "did"
        for a in report.actions if dry_run else report.done:
            if a.kind != "keep":
                what = f"{a.export_id} {a.version}" if a.version else a.path
                what += f" in {a.destination}" if a.destination != "default" else ""
                click.echo(f"{a.kind:12} {what}  {_human(a.bytes)}  ({a.reason})")
        totals = ", ".join(f"{k} {t['count']} ({_human(t['bytes'])})" for k, t in report.totals().items())
        click.echo(f"retention {verb}: {totals}; links revoked {report.revoked_links}")
        for e in report.errors:
            click.echo(f"error: {e}", err=True)
    sys.exit(1 if report.errors else 0)


@click.command("restore")
@click.argument("export_id")
@click.argument("version")
@click.option("--destination", default="default", show_default=True, help="Where the version is archived (an S3 one).")
@click.option("--json", "as_json", is_flag=True, help="Print the restored version as JSON.")
def restore_cmd(export_id: str, version: str, destination: str, as_json: bool) -> None:
    """Bring VERSION of EXPORT_ID back from the archive into the store. In an S3 destination archived to GLACIER or
    DEEP_ARCHIVE the first call asks S3 for a restore (hours); run it again once S3 has made the copies."""
    from vexport_pipeline.core import retention
    from vexport_pipeline.core.errors import InputError
    from vexport_pipeline.core.settings import current, destinations

    settings = current()
    try:
        if destination == "default":
            action = retention.restore(settings.paths, export_id, version)
        else:
            stores = retention.object_stores(destinations(settings))
            if destination not in stores:
                raise InputError("is not an S3 destination in VEXPORT_DESTINATIONS", where=destination)
            action = retention.restore_from(stores[destination][0], export_id, version, destination)
    except VexportError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(action.to_dict(), indent=2))
    elif action.reason.startswith("restored"):
        click.echo(f"restored {export_id} {version} ({_human(action.bytes)}) to {action.path}")
    else:
        click.echo(f"{export_id} {version}: {action.reason}")


COMMANDS: list = [retention_cmd, restore_cmd]
