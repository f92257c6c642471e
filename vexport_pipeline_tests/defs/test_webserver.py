"""The UI's backend as `make dev` runs it: the webserver loads workspace.yaml and serves the six assets."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vexport_pipeline_tests.conftest import REPO
from vexport_pipeline_tests.defs.test_dagster import ASSET_NAMES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def webserver(tmp_path, dagster_home):
    port = free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    # a file, not a pipe: an undrained pipe would block the server; closed with the server below
    log = open(tmp_path / "webserver.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(exe), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def dagster_home_with_repo_yaml(tmp_path) -> Path:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    return dagster_home


def test_webserver_serves_the_export_asset_graph(home, tmp_path):
    with webserver(tmp_path, dagster_home_with_repo_yaml(tmp_path)) as (port, proc):
        query = json.dumps(
            {
                "query": "{ assetNodes { assetKey { path } isPartitioned groupName } "
                "repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name } jobs { name } } } } }"
            }
        ).encode()
        deadline, data = time.time() + 90, None
        while time.time() < deadline and data is None:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql", data=query, headers={"Content-Type": "application/json"}
                )
                data = json.load(urllib.request.urlopen(req, timeout=5))["data"]
            except urllib.error.HTTPError:
                raise
            except OSError:  # not listening yet
                assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-2000:]
                time.sleep(1)
        assert data, "webserver did not answer within 90 s"
        nodes = {n["assetKey"]["path"][0]: n for n in data["assetNodes"]}
        assert set(nodes) == ASSET_NAMES
        analytics = nodes.pop("analytics")  # every export at once: not partitioned, a group of its own
        assert not analytics["isPartitioned"] and analytics["groupName"] == "analytics"
        for name in ("retention", "storage"):  # the deployment's own: not partitioned, group operations
            node = nodes.pop(name)
            assert not node["isPartitioned"] and node["groupName"] == "operations"
        assert all(n["isPartitioned"] and n["groupName"] == "export" for n in nodes.values())
        [repo] = data["repositoriesOrError"]["nodes"]
        assert {s["name"] for s in repo["sensors"]} == {
            "composition_sensor",
            "delivered_webhook",
            "failed_webhook",
            "canceled_webhook",
        }
        assert {"export_job", "metrics_job"} <= {j["name"] for j in repo["jobs"]}


def exported_ui(tmp_path, media, monkeypatch, extra: str = "") -> tuple[Path, Path]:
    """A fresh instance (the repo's dagster.yaml) and the export `ui` delivered into it in-process, as `vexport
    export` does: 2 s of the test clip to web_720p draft. Returns the instance's home and the manifest."""
    from vexport_pipeline.cli.export import run_export

    dagster_home = dagster_home_with_repo_yaml(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    manifest = tmp_path / "ui.yaml"
    manifest.write_text(
        f"id: ui\nsource: {media['av']}\nexport_type: single\nsegments: [{{start: 0, end: 2}}]\n"
        "targets: [{preset: web_720p, quality: draft}]\n" + extra
    )
    summary, code = run_export(manifest)
    assert code == 0, summary
    return dagster_home, manifest


@pytest.mark.browser
def test_validation_report_renders_in_the_ui(home, media, tmp_path, monkeypatch):
    """A real export into an instance, then the asset page in Chromium: the report's pictures decode."""
    from vexport_pipeline.core.validation.playback import CHROMIUM_ARGS, chromium

    if not chromium() and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    dagster_home, _ = exported_ui(tmp_path, media, monkeypatch)
    with webserver(tmp_path, dagster_home) as (port, proc), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        deadline = time.time() + 180  # the webserver loads the definitions; slow when the other test worker encodes
        while time.time() < deadline:
            try:
                page.goto(f"http://127.0.0.1:{port}/assets/validation_report?partition=ui&view=events")
                page.get_by_text("[Show Markdown]").first.click(timeout=15000)
                break
            except Exception:
                assert proc.poll() is None
                time.sleep(2)
        page.wait_for_timeout(1500)
        images = page.eval_on_selector_all(
            "img", "els => els.filter(e => e.src.startsWith('data:image/png')).map(e => [e.alt, e.naturalWidth])"
        )
        browser.close()
    assert [alt for alt, _ in images] == ["contact sheet", "VMAF and bitrate"] and all(w > 100 for _, w in images)
