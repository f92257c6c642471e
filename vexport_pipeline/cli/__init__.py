"""`vexport`: argument parsing and output only; the work is in the core and the assets."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

import click

from vexport_pipeline.cli.output import fail, write_json
from vexport_pipeline.core.errors import VexportError


def summary_table(data: dict) -> str:
    rows = [("clip", "target", "container", "codecs", "size", "fps", "duration", "MB", "validation")]
    for r in data["renditions"]:
        v = r.get("validation") or {}
        rows.append(
            (
                r["clip_id"] or "-",
                r["target"],
                r["container"],
                f"{r['video_codec']}/{r['audio_codec'] or '-'}",
                f"{r['width']}x{r['height']}",
                f"{r['fps']:g}",
                f"{r['duration']:.3f}",
                f"{r['size_bytes'] / 1e6:.2f}",
                f"{v.get('status', '-')} {v.get('score', '')}".strip(),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = f"export {data['export_id']}: {data['status']}"
    if data.get("output_duration") is not None:
        head += f" ({data['output_duration']:.3f} s of output)"
    out = [head, *lines]
    for e in data.get("errors", []):
        out.append(f"error [{e['code']}]: {e['message']}")
    return "\n".join(out)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """vexport: compositions in, validated platform-ready files out."""
    from vexport_pipeline.core.settings import current

    try:
        settings = current()  # a bad VEXPORT_* setting is refused before any command starts
        if settings.owners_file:  # and a bad owners file: its limits shape the instance the commands open
            from vexport_pipeline.core import owners

            owners.load()
    except VexportError as exc:
        fail(exc)


def run() -> None:
    """The `vexport` command (pyproject's entry point): `main`, then an exit that skips the interpreter's teardown.
    Every handler registered with atexit (logging's, Dagster's, temporary folders', executors') still runs first,
    and non-daemon threads are still waited for; what is skipped is freeing every module and object one by one,
    about 0.8 s once Dagster and pandas are imported (measured on `vexport export`, B8 in bench/README.md)."""
    status = [0]
    atexit.register(_exit_now, status)  # registered before anything else: runs after every other handler
    try:
        main()
    except SystemExit as exc:
        status[0] = exc.code if isinstance(exc.code, int) else int(exc.code is not None)  # a message: 1
        raise
    except KeyboardInterrupt:
        status[0] = 130
        raise
    except BaseException:  # a traceback Python prints: exit 1, as without this
        status[0] = 1
        raise


def _exit_now(status: list[int]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more can be said on it
            stream.flush()
    os._exit(status[0])


@main.command("export")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the summary JSON here.")
def export_cmd(manifest: Path, json_out: str | None) -> None:
    """Run the whole export for MANIFEST in-process and print a summary."""
    from .export import run_export

    data, code = run_export(manifest)
    write_json(json_out, data)
    click.echo(summary_table(data))
    sys.exit(code)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def submit(file: Path) -> None:
    """Validate a composition (or a bare video) and place it in the inbox the sensor watches."""
    from vexport_pipeline.core.intake.inbox import submit as submit_file
    from vexport_pipeline.core.settings import current

    settings = current()
    try:
        placed = submit_file(settings.paths, file, settings.policy)
    except VexportError as exc:
        fail(exc)
    click.echo(f"submitted {file} as {placed}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a list.")
def inbox(as_json: bool) -> None:
    """List the inbox: files waiting, taken (accepted/) and refused (rejected/, with the reason)."""
    from vexport_pipeline.core.intake.inbox import listing
    from vexport_pipeline.core.settings import current

    data = listing(current().paths)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for kind, rows in data.items():
        click.echo(f"{kind} ({len(rows)})")
        for r in rows:
            click.echo(f"  {r['file']}" + (f": {r['reason']}" if r.get("reason") else ""))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def presets(as_json: bool) -> None:
    """List targets and platform presets with their settings and limits."""
    from vexport_pipeline.core.spec.presets import PresetBook

    try:
        book = PresetBook.load()
    except VexportError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(book.presets, indent=2))
        return
    for name in book.names():
        p = book.presets[name]
        t = p["target"]
        settings = ", ".join(f"{k}={v}" for k, v in t.items())
        limits = ", ".join(
            f"{k}={v}{' (?)' if k in p.get('uncertain', []) else ''}" for k, v in p.get("limits", {}).items()
        )
        click.echo(f"{name:<24} {p.get('description', '')}\n{'':<24} {settings}\n{'':<24} limits: {limits or 'none'}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", "preset_name", required=True, help="Preset (or user preset) to validate against.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report JSON here.")
@click.option("--no-decode", is_flag=True, help="Skip the full decode (faster, less thorough).")
def validate(file: Path, preset_name: str, json_out: str | None, no_decode: bool) -> None:
    """Validate any media FILE against a preset; exit 0 on pass or warn, 1 on fail."""
    from vexport_pipeline.core.errors import InputError
    from vexport_pipeline.core.media.probe import probe, require_video
    from vexport_pipeline.core.spec.composition import Target
    from vexport_pipeline.core.spec.presets import PresetBook
    from vexport_pipeline.core.validation.checks import check_file
    from vexport_pipeline.core.validation.verdict import Issue, Report, verdict

    try:
        book = PresetBook.load()
        book.get(preset_name, "--preset")  # an unknown preset is refused input (exit 2), not a failed file
        if not file.is_file():
            raise InputError("does not exist or is not a regular file", where=str(file), code="file_missing")
    except VexportError as exc:
        fail(exc)
    try:
        info = require_video(probe(file, where=str(file)), where=str(file))
        settings = book.resolve(Target(preset=preset_name), info, "--preset")
        report = check_file(file, settings, source_has_audio=info.has_audio, decode=not no_decode, info=info)
    except InputError as exc:  # the file itself is bad: that is a failed validation with its reason
        issues = [Issue("error", exc.code, str(exc), "re-encode or re-export the file; it cannot be read whole")]
        report = Report(*verdict(issues), issues)
    data = {"file": str(file), "preset": preset_name, **report.to_dict()}
    write_json(json_out, data)
    click.echo(f"{file}: {report.status} (score {report.score}) against {preset_name}")
    for i in report.issues:
        click.echo(f"  {i.severity:<7} {i.code}: {i.message}" + (f" -> {i.hint}" if i.hint else ""))
    sys.exit(1 if report.status == "fail" else 0)


@main.command()
@click.option("--seconds", default=8.0, show_default=True, help="Length of the generated sample.")
def demo(seconds: float) -> None:
    """Generate a sample source and composition and run the whole export on the embedded defaults."""
    from .demo import make_demo
    from .export import run_export

    manifest = make_demo(seconds)
    click.echo(f"demo composition: {manifest}")
    data, code = run_export(manifest)
    out = manifest.with_name("summary.json")
    write_json(str(out), data)
    click.echo(summary_table(data))
    click.echo(f"summary JSON: {out}")
    sys.exit(code)


@main.command()
@click.option("--port", default=3000, show_default=True)
def dev(port: int) -> None:
    """Dagster UI and daemon (sensors, schedules, run queue) on http://127.0.0.1:PORT."""
    from vexport_pipeline.defs.instance import ensure_dagster_home

    try:
        ensure_dagster_home()
    except VexportError as exc:
        fail(exc)
    workspace = Path(__file__).resolve().parents[2] / "workspace.yaml"
    exe = Path(sys.executable).with_name("dagster")
    os.execv(str(exe), [str(exe), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)])


def _more_commands() -> None:
    from . import operations, retention
    from .delivery import destinations, links, metrics, serve

    for command in (serve, links, metrics, destinations, *operations.COMMANDS, *retention.COMMANDS):
        main.add_command(command)


_more_commands()

if __name__ == "__main__":
    main()
