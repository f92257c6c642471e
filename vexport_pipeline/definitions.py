"""The Dagster entry point (`workspace.yaml`, `dagster dev`): merges each stage's definitions.
Nothing is built at import; the settings are read when Dagster loads the definitions."""

import dagster as dg

from vexport_pipeline.core.settings import Settings, current
from vexport_pipeline.defs.assets import export_assets
from vexport_pipeline.defs.console import console
from vexport_pipeline.defs.delivery.analytics import analytics
from vexport_pipeline.defs.delivery.schedules import metrics_rollup
from vexport_pipeline.defs.intake.sensors import composition_sensor
from vexport_pipeline.defs.jobs import export_job, metrics_job
from vexport_pipeline.defs.operations.notifications import WEBHOOK_SENSORS
from vexport_pipeline.defs.operations.retention import retention, retention_job, retention_schedule, storage
from vexport_pipeline.defs.placement import executor
from vexport_pipeline.defs.resources import build_resources


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[*export_assets, analytics, retention, storage],
        jobs=[export_job, metrics_job, retention_job],
        sensors=[composition_sensor, *WEBHOOK_SENSORS],
        schedules=[metrics_rollup, retention_schedule],
        resources=build_resources(settings),
        loggers={"console": console},
        executor=executor(settings.executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(current())
