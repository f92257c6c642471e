"""`vexport` ends with `os._exit` after its atexit handlers (cli.run): the interpreter's teardown is skipped, and
nothing a user or a script sees changes: exit codes, buffered output, handlers registered along the way."""

import subprocess
import sys

import pytest

SCRIPT = """
import atexit, sys, click
from vexport_pipeline import cli

how, marker = sys.argv[1:]

@cli.main.command("probe")
@click.argument("how")
def probe(how):
    atexit.register(lambda: open(marker, "w").write("handler ran"))
    print("x" * 100_000, end="")  # buffered in a pipe, flushed by nobody but the exit
    if how == "code":
        sys.exit(3)
    if how == "boom":
        raise RuntimeError("boom")

sys.argv = ["vexport", "probe", how]
cli.run()
"""


@pytest.mark.parametrize(("how", "code"), [("ok", 0), ("code", 3), ("boom", 1)])
def test_the_quick_exit_keeps_exit_codes_output_and_atexit_handlers(tmp_path, how, code):
    marker = tmp_path / "marker"
    r = subprocess.run([sys.executable, "-c", SCRIPT, how, str(marker)], capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert r.stdout == "x" * 100_000
    assert marker.read_text() == "handler ran"
    assert ("RuntimeError: boom" in r.stderr) == (how == "boom")
