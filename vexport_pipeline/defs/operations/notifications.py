"""Signed webhooks on delivered, failed and canceled exports: run-status sensors over `export_job` that
POST the summary JSON to every URL in VEXPORT_WEBHOOKS (see `core/notify.py` for the signature)."""

import json

import dagster as dg

from vexport_pipeline.core import notify
from vexport_pipeline.core.delivery.publish import SUMMARY
from vexport_pipeline.core.errors import VexportError
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.settings import current, signing_keys
from vexport_pipeline.defs.failures import step_errors
from vexport_pipeline.defs.jobs import EXPORT_TAG, export_job
from vexport_pipeline.defs.resources import HomeResource, StoreResource


def delivered_summary(home: HomeResource, store: StoreResource, export_id: str) -> dict | None:
    """The summary of the export's current version in its first destination (what the run delivered)."""
    try:
        first = registry.load(home.paths, export_id).composition.delivery.destinations[0]
        target = store.get(first)
    except (VexportError, KeyError):
        return None
    v = target.current(export_id)
    data = target.read_record(v, SUMMARY) if v else None
    return json.loads(data) if data else None


def _send(event: str, payload: dict) -> list[notify.Sent]:
    settings = current()
    if not settings.webhooks:
        return []
    secret = settings.webhook_secret or signing_keys(settings)[-1]
    return [notify.post(url, event, payload, secret) for url in settings.webhooks]


def _report(context, event: str, payload: dict) -> None:
    for sent in _send(event, payload):
        how = "delivered" if sent.ok else "FAILED"
        context.log.info(f"webhook {event} to {sent.url}: {how} (HTTP {sent.status}, {sent.attempts} attempt(s))")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[export_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="POSTs the summary of every delivered export to VEXPORT_WEBHOOKS, signed.",
)
def delivered_webhook(context: dg.RunStatusSensorContext, home: HomeResource, store: StoreResource):
    export_id = context.dagster_run.tags.get(EXPORT_TAG)
    if export_id:
        summary = delivered_summary(home, store, export_id) or {"export_id": export_id, "status": "delivered"}
        _report(context, "export.delivered", {**summary, "run_id": context.dagster_run.run_id})


@dg.run_failure_sensor(
    monitored_jobs=[export_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="POSTs every failed export (its errors) to VEXPORT_WEBHOOKS, signed.",
)
def failed_webhook(context: dg.RunFailureSensorContext):
    export_id = context.dagster_run.tags.get(EXPORT_TAG)
    errors = step_errors(context.get_step_failure_events())
    if export_id:
        payload = {"export_id": export_id, "status": "failed", "run_id": context.dagster_run.run_id}
        _report(context, "export.failed", {**payload, "errors": errors or [{"code": "failed", "message": "failed"}]})


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    monitored_jobs=[export_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="POSTs every canceled export to VEXPORT_WEBHOOKS, signed.",
)
def canceled_webhook(context: dg.RunStatusSensorContext):
    export_id = context.dagster_run.tags.get(EXPORT_TAG)
    if export_id:
        payload = {"export_id": export_id, "status": "canceled", "run_id": context.dagster_run.run_id}
        _report(context, "export.canceled", {**payload, "errors": [{"code": "canceled", "message": "canceled"}]})


WEBHOOK_SENSORS = [delivered_webhook, failed_webhook, canceled_webhook]
