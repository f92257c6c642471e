"""The Dagster UI as an operator uses it, in a real Chromium against the real daemon and webserver: an export run
launched from the UI is terminated from the UI mid-encode, and leaves nothing behind."""

import contextlib
import os
from pathlib import Path

import pytest

from vexport_pipeline_tests.defs.test_daemon import daemon_and_webserver, encoding, runs_of, wait_for
from vexport_pipeline_tests.defs.test_webserver import exported_ui


def delivered(folder: Path) -> tuple[list[str], Path | None]:
    """The versions in an export's store folder, and the one `current` points at."""
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    current = folder / "current"
    return names, (current.resolve() if current.exists() else None)


@contextlib.contextmanager
def pictured(page, path: Path):
    """What the browser showed when a step failed, next to the test's logs."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path))
        raise


@pytest.mark.browser
def test_a_run_launched_from_the_ui_is_terminated_from_the_ui(home, media, tmp_path, monkeypatch):
    """Jobs / export_job / Materialize all for one partition, then Terminate on the run's page: the run ends
    canceled, its FFmpeg is gone, and the export's earlier delivery is all the store holds."""
    from vexport_pipeline.core.validation.playback import CHROMIUM_ARGS, chromium

    if not chromium() and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    from vexport_pipeline.cli.export import prepare

    # delivered once, quickly, in-process (`vexport export`): the partition exists, the store holds a version
    dagster_home, manifest = exported_ui(tmp_path, media, monkeypatch, "validation: {quality: off}\n")
    before = delivered(home.store / "ui")
    assert before[1] is not None
    # then the composition changes to a 4K encode (half a minute or more here), registered without running it
    # (as the CLI registers: the inbox sensor only asks again for what came through the inbox)
    manifest.write_text(
        f"id: ui\nsource: {media['av']}\nexport_type: single\n"
        "targets: [{preset: youtube_4k, crf: 18}]\nvalidation: {quality: off}\n"
    )
    prepare(manifest)

    # the UI's one-time "Join the Dagster community" dialog, already dismissed on this instance (where Dagster
    # notes that): it would otherwise open over whatever page comes first, at a moment of its own
    (dagster_home / ".nux").mkdir()
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    with (
        # the daemon dequeues what the UI launches (dagster.yaml: QueuedRunCoordinator)
        daemon_and_webserver(env, tmp_path) as (port, logs, daemon, webserver),
        sync_playwright() as pw,
    ):
        ui = f"http://127.0.0.1:{port}"
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        with pictured(page, tmp_path / "ui-failure.png"):
            materialize = page.get_by_role("button", name="Materialize all")

            def job_page() -> bool:
                assert webserver.poll() is None, logs[1].read_text()[-3000:]
                try:
                    page.goto(f"{ui}/locations/vexport/jobs/export_job", timeout=15000)
                    materialize.wait_for(timeout=15000)
                    return True
                except Exception:  # not listening or the code location still loading
                    return False

            wait_for("the export_job page in the UI", job_page, 150, logs)

            # Jobs / export_job: Materialize all..., the preset All (the instance's one partition, `ui`), Launch 1
            # run, then the toast's View. The dialog's rows still move while it loads partition health: a click on
            # the partition field once landed on the "Missing" preset that had moved under it (0 partitions, and no
            # `ui` in the list), so the choice is checked and made again until the dialog offers one run
            materialize.click()
            dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
            launch_one = dialog.get_by_role("button", name="Launch 1 run")

            def partition_ui_chosen() -> bool:
                dialog.get_by_role("button", name="All", exact=True).click(timeout=30000)
                try:
                    launch_one.wait_for(timeout=5000)
                    return dialog.get_by_text("ui", exact=True).count() > 0
                except Exception:
                    return False

            wait_for("partition `ui` chosen in the launch dialog", partition_ui_chosen, 90, logs)
            launch_one.click(timeout=30000)
            page.get_by_role("link", name="View", exact=True).click(timeout=30000)
            page.wait_for_url("**/runs/*", timeout=30000)
            run_id = page.url.rstrip("/").rsplit("/", 1)[-1]

            def this_run() -> dict:
                return next((r for r in runs_of(port, "ui") if r["runId"] == run_id), {})

            # dequeued by the daemon, started, and FFmpeg encoding into the export's work folder
            wait_for("the UI's run started", lambda: this_run().get("status") == "STARTED", 150, logs)
            tags = {t["key"]: t["value"] for t in this_run()["tags"]}
            assert tags["dagster/from_ui"] == "true" and tags["dagster/partition"] == "ui"
            wait_for("the 4K encode started", lambda: encoding(home.work / "ui"), 120, logs)

            # the run's page: Terminate, then the dialog's "Terminate 1 run"
            page.get_by_role("button", name="Terminate").click(timeout=30000)
            page.get_by_role("button", name="Terminate 1 run").click(timeout=30000)
            wait_for("the run canceled", lambda: this_run().get("status") == "CANCELED", 90, logs)
            # and the page says so, as the operator sees it
            page.reload()
            page.get_by_text("Canceled", exact=True).first.wait_for(timeout=30000)
            page.screenshot(path=str(tmp_path / "canceled.png"))
        browser.close()

        wait_for("FFmpeg gone", lambda: not encoding(home.work / "ui"), 30, logs)
        assert not list((home.work / "ui").rglob(".*.partial*"))
        assert delivered(home.store / "ui") == before  # nothing new delivered, the earlier version still current
        # canceled is final: no retry and no other run of the export (the in-process delivery is the other one)
        assert sorted(r["status"] for r in runs_of(port, "ui")) == ["CANCELED", "SUCCESS"]
        assert daemon.poll() is None
