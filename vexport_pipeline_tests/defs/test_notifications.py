"""Webhooks as a receiver sees them: a real HTTP server gets the signed summary of a delivered export
(after two 500s: retried) and the errors of a failed one; a 4xx is not retried."""

import http.server
import json
import shutil
import threading

import dagster as dg
import pytest

from vexport_pipeline.core import notify
from vexport_pipeline.defs.operations.notifications import delivered_webhook, failed_webhook
from vexport_pipeline.defs.resources import HomeResource, StoreResource
from vexport_pipeline_tests.defs.test_dagster import materialize, register

SECRET = "webhook-test-secret"


@pytest.fixture
def receiver():
    """An HTTP endpoint that answers with the queued statuses (then 200) and keeps what it received."""
    got, answers = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got, answers
    server.shutdown()


def context_for(instance, result, sensor_name, resources=None):
    run = instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type_value in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"))
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name, dagster_event=event, dagster_instance=instance, dagster_run=run, resources=resources
    )


def test_a_delivered_export_is_posted_signed_and_retried(home, media, receiver, monkeypatch):
    url, got, answers = receiver
    monkeypatch.setenv("VEXPORT_WEBHOOKS", url)
    monkeypatch.setenv("VEXPORT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setattr(notify.time, "sleep", lambda s: None)  # the backoff, not the behaviour, is skipped
    answers.extend([500, 503])
    target = {"preset": "web_720p", "quality": "draft"}
    register(home, media, {"id": "hooked", "source": str(media["av"]), "export_type": "single",
                           "segments": [{"start": 0, "end": 1}], "targets": [target]})  # fmt: skip
    resources = {"home": HomeResource(root=str(home.root), media_roots=[str(media["dir"])]),
                 "store": StoreResource(root=str(home.store))}  # fmt: skip
    with dg.instance_for_test() as instance:
        result = materialize(instance, "hooked")
        assert result.success
        delivered_webhook(context_for(instance, result, "delivered_webhook", resources))
    assert len(got) == 3  # two 5xx answers, then the one that took
    last = got[-1]
    assert last["headers"]["x-vexport-event"] == "export.delivered"
    stamp, sig = last["headers"]["x-vexport-timestamp"], last["headers"]["x-vexport-signature"]
    assert notify.verify(SECRET, stamp, last["body"], sig)
    assert not notify.verify("another-secret", stamp, last["body"], sig)
    assert not notify.verify(SECRET, stamp, last["body"] + b" ", sig)  # the body was changed on the way
    payload = json.loads(last["body"])
    assert payload["export_id"] == "hooked" and payload["status"] == "delivered"
    assert payload["renditions"][0]["target"] == "web_720p" and payload["run_id"] == result.run_id


def test_a_failed_export_is_posted_with_its_errors_and_a_4xx_is_not_retried(home, media, tmp_path, receiver,
                                                                            monkeypatch):  # fmt: skip
    url, got, answers = receiver
    monkeypatch.setenv("VEXPORT_WEBHOOKS", url)
    monkeypatch.setenv("VEXPORT_WEBHOOK_SECRET", SECRET)
    doomed = shutil.copy(media["av"], tmp_path / "doomed.mp4")
    comp = {"id": "doomed", "source": str(doomed), "targets": [{"preset": "web_720p", "quality": "draft"}]}
    register(home, {**media, "av": doomed}, comp)
    doomed.unlink()  # gone before the run: the source step fails with source_missing
    with dg.instance_for_test() as instance:
        result = materialize(instance, "doomed")
        assert not result.success
        failed_webhook(context_for(instance, result, "failed_webhook").for_run_failure())
    [sent] = got
    payload = json.loads(sent["body"])
    assert sent["headers"]["x-vexport-event"] == "export.failed"
    assert payload["status"] == "failed" and payload["errors"][0]["code"] == "source_missing"

    answers.append(410)
    refused = notify.post(url, "export.failed", payload, SECRET, backoff_s=0)
    assert refused == notify.Sent(url, 410, 1, False) and len(got) == 2


def test_webhook_urls_are_checked_when_the_settings_are_read():
    from vexport_pipeline.core.errors import ConfigError
    from vexport_pipeline.core.settings import Settings

    with pytest.raises(ConfigError, match="VEXPORT_WEBHOOKS"):
        Settings.from_env({"VEXPORT_WEBHOOKS": "file:///etc/passwd"})
    with pytest.raises(ConfigError, match="without credentials"):
        Settings.from_env({"VEXPORT_WEBHOOKS": "https://user:pw@example.com/hook"})
    assert Settings.from_env({"VEXPORT_WEBHOOKS": "https://a.example/h, http://b.example/h"}).webhooks == (
        "https://a.example/h",
        "http://b.example/h",
    )
