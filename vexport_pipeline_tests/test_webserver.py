"""The UI's backend as `make dev` runs it: the webserver loads workspace.yaml and serves the six assets."""
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webserver_serves_the_export_asset_graph(home, tmp_path):
    port = free_port()
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    exe = Path(sys.executable).with_name("dagster-webserver")
    env = {**__import__("os").environ, "DAGSTER_HOME": str(dagster_home)}
    log = open(tmp_path / "webserver.log", "w+")  # a file, not a pipe: an undrained pipe would block the server
    proc = subprocess.Popen([str(exe), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        query = json.dumps({"query": "{ assetNodes { assetKey { path } isPartitioned groupName } "
                                     "repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name } jobs { name } } } } }"}).encode()
        deadline, data = time.time() + 90, None
        while time.time() < deadline and data is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query, headers={"Content-Type": "application/json"})
                data = json.load(urllib.request.urlopen(req, timeout=5))["data"]
            except urllib.error.HTTPError:
                raise
            except OSError:  # not listening yet
                assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-2000:]
                time.sleep(1)
        assert data, "webserver did not answer within 90 s"
        nodes = {n["assetKey"]["path"][0]: n for n in data["assetNodes"]}
        assert set(nodes) == {"source", "segments", "renditions", "validation_report", "delivery", "delivery_metrics"}
        assert all(n["isPartitioned"] and n["groupName"] == "export" for n in nodes.values())
        [repo] = data["repositoriesOrError"]["nodes"]
        assert [s["name"] for s in repo["sensors"]] == ["composition_sensor"]
        assert {"export_job", "metrics_job"} <= {j["name"] for j in repo["jobs"]}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
