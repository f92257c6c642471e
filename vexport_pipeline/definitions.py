"""The Dagster entry point (`workspace.yaml`, `dagster dev`): merges each stage's definitions.
Nothing is built at import; the settings are read when Dagster loads the definitions."""

import dagster as dg

from vexport_pipeline.core.settings import Settings, current
from vexport_pipeline.defs import export_assets
from vexport_pipeline.defs.console import console
from vexport_pipeline.defs.delivery.analytics import analytics
from vexport_pipeline.defs.delivery.schedules import metrics_rollup
from vexport_pipeline.defs.intake.sensors import composition_sensor
from vexport_pipeline.defs.jobs import export_job, metrics_job
from vexport_pipeline.defs.resources import build_resources


def _operations() -> tuple[list, list, list, list]:
    from vexport_pipeline.defs import operations
    from vexport_pipeline.defs.operations import notifications, retention  # noqa: F401  (they fill the lists)

    return operations.ASSETS, operations.JOBS, operations.SCHEDULES, operations.SENSORS


def build_definitions(settings: Settings) -> dg.Definitions:
    assets, jobs, schedules, sensors = _operations()
    return dg.Definitions(
        assets=[*export_assets, analytics, *assets],
        jobs=[export_job, metrics_job, *jobs],
        sensors=[composition_sensor, *sensors],
        schedules=[metrics_rollup, *schedules],
        resources=build_resources(settings),
        loggers={"console": console},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(current())
