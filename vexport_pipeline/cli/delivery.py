"""`vexport serve`, `vexport links ...`, `vexport metrics`: argument parsing and output over the delivery
core and the gateway."""

from __future__ import annotations

import json
import sys

import click

from vexport_pipeline.cli.output import fail
from vexport_pipeline.core.errors import InputError, VexportError


def _parts():
    """The local store, the event store and the signer of this deployment."""
    from vexport_pipeline.core.delivery.events import EventStore
    from vexport_pipeline.core.delivery.links import LinkSigner
    from vexport_pipeline.core.delivery.stores import LocalStore
    from vexport_pipeline.core.settings import current, signing_keys

    settings = current()
    paths = settings.paths
    events = EventStore(settings.events_url or paths.events_db)
    return settings, LocalStore(paths.store), events, LinkSigner(signing_keys(settings))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """The download gateway for signed links (GET|HEAD /d/TOKEN); run several behind a load balancer."""
    import uvicorn

    from vexport_pipeline.core.delivery.access import networks
    from vexport_pipeline.core.settings import destinations
    from vexport_pipeline.gateway.app import SERVER_OPTIONS, Gateway, create_app
    from vexport_pipeline.gateway.limits import RateLimiter

    settings, store, events, signer = _parts()
    try:
        dests = destinations(settings)
    except VexportError as exc:
        fail(exc)
    gw = Gateway(
        events,
        signer,
        roots=tuple(d.root for d in dests.values() if d.kind == "local"),  # only files under these are served
        trusted_proxies=networks(settings.trusted_proxies, "VEXPORT_TRUSTED_PROXIES"),
        limiter=RateLimiter(settings.rate_limit),
        destinations=dests,
    )
    click.echo(f"vexport gateway on http://{host}:{port} (links: {settings.public_url}/d/...)")
    uvicorn.run(create_app(gw), host=host, port=port, **SERVER_OPTIONS)


@click.group()
def links() -> None:
    """Create, list and revoke download links of delivered exports."""


@links.command("create")
@click.argument("export_id")
@click.option("--rendition", help="Delivered file name or target name (needed when there are several).")
@click.option("--bundle", is_flag=True, help="A link to the export's ZIP bundle.")
@click.option("--ttl", default="24h", show_default=True, help="How long the link works: 45s, 90m, 24h, 30d.")
@click.option("--max-downloads", type=click.IntRange(1, 1_000_000), help="Complete downloads allowed.")
@click.option("--allow-ip", "allow_ips", multiple=True, help="CIDR allowed to download (repeatable).")
@click.option("--country", "countries", multiple=True, help="ISO country code allowed (repeatable).")
@click.option("--one-time", is_flag=True, help="The link works for one complete download.")
@click.option("--max-concurrent", type=click.IntRange(1, 10_000), help="Downloads at once (per gateway process).")
@click.option("--max-rate", help="Bytes a second per download, e.g. 512K or 2M (1024-based).")
@click.option("--destination", default="default", show_default=True, help="Which delivered copy the link serves.")
@click.option("--json", "as_json", is_flag=True, help="Print the link as JSON.")
def create(export_id, rendition, bundle, ttl, max_downloads, allow_ips, countries, one_time, max_concurrent, max_rate,
           destination, as_json):  # fmt: skip
    """A new signed link to a file of EXPORT_ID's delivered version."""
    from vexport_pipeline.core.delivery.access import networks
    from vexport_pipeline.core.delivery.links import LinkPolicy, for_export
    from vexport_pipeline.core.spec.composition import MAX_LINK_TTL
    from vexport_pipeline.core.timecode import parse_ttl

    settings, store, events, signer = _parts()
    try:
        try:
            seconds = parse_ttl(ttl)
            networks(allow_ips, "--allow-ip")
        except ValueError as exc:
            raise InputError(str(exc), where="--ttl" if "duration" in str(exc) or "zero" in str(exc) else None)
        if seconds > MAX_LINK_TTL:
            raise InputError(f"{ttl} is longer than a year", where="--ttl")
        if any(len(c) != 2 or not c.isalpha() for c in countries):
            raise InputError("use two-letter ISO 3166 codes, e.g. DE", where="--country")
        rate = _rate(max_rate) if max_rate else None
        policy = LinkPolicy(
            seconds,
            max_downloads,
            tuple(allow_ips),
            one_time,
            tuple(c.upper() for c in countries),
            max_concurrent,
            rate,
        )
        if destination != "default":
            from vexport_pipeline.core.settings import destinations

            if destination not in (dests := destinations(settings)):
                raise InputError(f"not a configured destination ({', '.join(dests)})", where="--destination")
            store = dests[destination].store()
        link, row = for_export(
            store, events, signer, settings.public_url, export_id, rendition=rendition, bundle=bundle, policy=policy,
            destination=destination,
        )  # fmt: skip
    except VexportError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps({**row.to_dict(), "url": link.url}, indent=2))
    else:
        click.echo(f"{link.url}\n  {row.rendition}, expires {link.expires_at}, id {link.id}")


def _rate(text: str) -> int:
    """Bytes a second from '512K', '2M', '1G' or a number (at least 16 KiB/s, at most 10 GiB/s)."""
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not m:
        raise InputError(f"{text!r} is not a rate; use e.g. 512K or 2M (bytes a second)", where="--max-rate")
    value = float(m.group(1)) * 1024 ** " KMG".index((m.group(2) or " ").upper())
    if not 16 * 1024 <= value <= 10 * 1024**3:
        raise InputError(f"{text} is outside 16K..10G bytes a second", where="--max-rate")
    return int(value)


@links.command("list")
@click.argument("export_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(export_id: str, as_json: bool) -> None:
    """Every link of EXPORT_ID with its limits and downloads so far."""
    _, _, events, _ = _parts()
    rows = [r.to_dict() for r in events.links(export_id)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "revoked" if r["revoked"] else f"expires {r['expires_at']}"
        limit = f"/{r['max_downloads']}" if r["max_downloads"] else ""
        click.echo(f"{r['id']}  {r['rendition']}  {r['downloads']}{limit} downloads  {state}")


@links.command("revoke")
@click.argument("link_id", required=False)
@click.option("--export", "export_id", help="Revoke every link of this export instead (or of one --version).")
@click.option("--version", help="With --export: only the links to this delivered version.")
def revoke(link_id: str | None, export_id: str | None, version: str | None) -> None:
    """Revoke one link, or every link of an export or of one of its versions, at once (410 from the next
    request)."""
    _, _, events, _ = _parts()
    if bool(link_id) == bool(export_id) or (version and not export_id):
        fail(InputError("give a LINK_ID, or --export EXPORT_ID [--version VERSION]", where="links revoke"))
    if link_id:
        if events.link(link_id) is None:
            fail(InputError("no such link", where=link_id, code="link_unknown"))
        n = events.revoke(link_id)
        click.echo(f"revoked {link_id}" if n else f"{link_id} was already revoked")
        return
    if not events.links(export_id):
        fail(InputError("has no links", where=export_id, code="not_delivered"))
    n = events.revoke(export_id=export_id, version=version)
    click.echo(f"revoked {n} link(s) of {export_id}" + (f" version {version}" if version else ""))


@click.command()
@click.argument("export_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def metrics(export_id: str, as_json: bool) -> None:
    """Downloads of EXPORT_ID per rendition: completed downloads, requests, bytes, clients, countries, devices."""
    from vexport_pipeline.core.delivery.analytics import export_metrics

    _, _, events, _ = _parts()
    if not events.links(export_id):
        fail(InputError("has no links (not delivered?)", where=export_id, code="not_delivered"))
    data = export_metrics(export_id, events.requests_frame(export_id), events.links_frame(export_id))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"export {export_id}")
    for r in [*data["renditions"], {"name": "total", **data["totals"]}]:
        click.echo(
            f"  {r['name']}: {r['downloads']} downloads, {r['requests']} requests, "
            f"{r['bytes_served']:,} bytes, {r['unique_clients']} clients"
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-check", is_flag=True, help="Only list them; do not write a probe object to each.")
def destinations(as_json: bool, no_check: bool) -> None:
    """The delivery destinations (VEXPORT_DESTINATIONS) and whether each is reachable and writable; exits 1
    if one is not."""
    from vexport_pipeline.core.delivery.destinations import check
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.core.settings import destinations as configured

    try:
        dests = configured(current())
    except VexportError as exc:
        fail(exc)
    rows = []
    for d in dests.values():
        ok, message = (None, "not checked") if no_check else check(d)
        rows.append({"name": d.name, "url": d.url, "kind": d.kind, "serve": d.serve, "ok": ok, "message": message})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            mark = {True: "ok  ", False: "FAIL", None: "-   "}[r["ok"]]
            click.echo(f"{mark} {r['name']:<16} {r['url']}  ({r['message'].split(': ', 1)[-1]})")
    sys.exit(1 if any(r["ok"] is False for r in rows) else 0)
