"""The production path end to end: PostgreSQL for Dagster's storage, the real daemon and webserver. Files dropped in
the inbox become runs that the daemon launches within the per-owner limit; one is terminated over GraphQL (as the
UI's Terminate button does) and leaves nothing behind; the other then runs and delivers."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from vexport_pipeline.core.intake import inbox
from vexport_pipeline_tests.conftest import REPO
from vexport_pipeline_tests.defs.test_webserver import free_port

RUNS_QUERY = """query Runs($export: String!) {
  runsOrError(filter: {tags: [{key: "vexport/export", value: $export}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


@contextlib.contextmanager
def started(argv: list[str], env: dict, log: Path):
    """A Dagster process in a session of its own: stopped with everything it started (run workers, FFmpeg)."""
    with open(log, "w+") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def daemon_and_webserver(env: dict, tmp_path: Path):
    """The real `dagster-daemon` and `dagster-webserver` on `workspace.yaml`: (port, logs, daemon, webserver)."""
    bin_dir = Path(sys.executable).parent
    port = free_port()
    logs = [tmp_path / "daemon.log", tmp_path / "webserver.log"]
    workspace = str(REPO / "workspace.yaml")
    with (
        started([str(bin_dir / "dagster-daemon"), "run", "-w", workspace], env, logs[0]) as daemon,
        started(
            [str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)], env, logs[1]
        ) as webserver,
    ):
        yield port, logs, daemon, webserver


def graphql(port: int, query: str, **variables) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=10))["data"]


def runs_of(port: int, export_id: str) -> list[dict]:
    try:
        return graphql(port, RUNS_QUERY, export=export_id)["runsOrError"]["results"]
    except OSError:  # the webserver is not listening yet
        return []


def encoding(folder: Path) -> list:
    """FFmpeg processes writing into this folder, on the whole machine (run workers are the daemon's children)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if "ffmpeg" in (p.info["name"] or "") and p.info["status"] != psutil.STATUS_ZOMBIE:
                found += [p] if any(str(folder) in a for a in p.info["cmdline"] or []) else []
    return found


NOISE = ("skipped: Sensor function returned an empty result", "Checking for new runs for sensor", "fork() handlers")


def wait_for(what: str, check, timeout: float, logs: list[Path], state=None):
    """check() until it returns something true; on timeout the error shows `state()` (what the test saw) and the
    logs without the daemon's idle ticks, so a failure in CI says what happened without a rerun."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if got := check():
            return got
        time.sleep(0.5)
    lines = {p.name: [ln for ln in p.read_text().splitlines() if not any(n in ln for n in NOISE)] for p in logs}
    tails = "\n".join(f"--- {name}\n" + "\n".join(kept[-150:]) for name, kept in lines.items())
    seen = f"\n--- state\n{state()}" if state else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s{seen}\n{tails}")


@pytest.mark.postgres
def test_the_daemon_launches_limits_and_terminates_inbox_exports_on_postgres(home, media, pg_url, tmp_path):
    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    settings["storage"] = {"postgres": {"postgres_url": pg_url}}
    limits = settings["concurrency"]["runs"]["tag_concurrency_limits"]
    [owner_limit] = [t for t in limits if isinstance(t.get("value"), dict)]  # the per-owner default
    owner_limit["limit"] = 1  # one run per owner at a time: the second export waits in the queue
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "VEXPORT_INBOX_MIN_AGE": "0"}
    slow = {"targets": [{"preset": "youtube_1080p", "quality": "high", "crf": 18}], "validation": {"quality": "off"}}
    quick = {"targets": [{"preset": "web_720p", "quality": "draft"}], "segments": [{"start": 0, "end": 1}],
             "validation": {"quality": "off"}}  # fmt: skip
    for export_id, extra in (("first", slow), ("second", quick)):
        comp = {"id": export_id, "source": str(media["av"]), **extra}
        (home.inbox / f"{export_id}.yaml").write_text(yaml.safe_dump(comp))
    with daemon_and_webserver(env, tmp_path) as (port, logs, daemon, _):

        def state() -> str:
            runs = {e: [(r["runId"][:8], r["status"]) for r in runs_of(port, e)] for e in ("first", "second")}
            registered = sorted(f.name for f in home.registry.glob("*.json"))
            return f"runs: {runs}\ninbox: {inbox.listing(home)}\nregistry: {registered}"

        # the sensor's first tick registers both; the queue starts one, the owner limit holds the other
        first = wait_for("the first export running", lambda: [r for r in runs_of(port, "first") if r["status"] ==
                         "STARTED"], 150, logs, state)[0]  # fmt: skip
        # the sensor may still be creating the second run (each costs the code server an execution plan)
        wait_for("the second export queued", lambda: [r["status"] for r in runs_of(port, "second")] == ["QUEUED"],
                 60, logs, state)  # fmt: skip
        assert runs_of(port, "first")[0]["status"] == "STARTED"  # held by the owner limit, not by the first ending
        tags = {t["key"]: t["value"] for t in first["tags"]}
        assert tags["vexport/owner"] == "default" and tags["dagster/partition"] == "first"

        # Terminate, as the UI's button does: the run stops, its FFmpeg is gone, nothing is delivered
        wait_for("the first encode started", lambda: encoding(home.work / "first"), 90, logs, state)
        answer = graphql(
            port,
            "mutation T($id: String!) { terminateRun(runId: $id) { __typename ... on PythonError { message } } }",
            id=first["runId"],
        )
        assert answer["terminateRun"]["__typename"] == "TerminateRunSuccess", answer
        wait_for("the first run canceled", lambda: runs_of(port, "first")[0]["status"] == "CANCELED", 60, logs, state)
        assert not encoding(home.work / "first")
        assert not (home.store / "first").exists()
        assert not list((home.work / "first").rglob(".*.partial*"))

        # then the queue lets the second one through, and it delivers
        done = wait_for("the second run ended", lambda: [r for r in runs_of(port, "second") if r["status"] in
                        ("SUCCESS", "FAILURE", "CANCELED")], 150, logs, state)  # fmt: skip
        assert done[0]["status"] == "SUCCESS", logs[0].read_text()[-3000:]
        assert daemon.poll() is None
    summary = json.loads((home.store / "second" / "current" / "summary.json").read_text())
    assert summary["status"] == "delivered" and summary["renditions"][0]["height"] == 720
