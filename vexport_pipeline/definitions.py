"""Assembles the Dagster definitions; every piece lives in its own module."""

import dagster as dg

from .defs import export_assets
from .defs.delivery.schedules import metrics_rollup
from .defs.instance import apply_env_defaults
from .defs.intake.sensors import composition_sensor
from .defs.jobs import export_job, metrics_job
from .defs.resources import EncoderResource, VexportResource

apply_env_defaults()  # only fills in unset VEXPORT_* variables with the embedded defaults


def resources() -> dict:
    return {
        "vexport": VexportResource(
            home=dg.EnvVar("VEXPORT_HOME"),
            media_roots=dg.EnvVar("VEXPORT_MEDIA_ROOTS"),
            public_url=dg.EnvVar("VEXPORT_PUBLIC_URL"),
        ),
        "encoders": EncoderResource(
            hardware=dg.EnvVar("VEXPORT_HARDWARE"), chunk_seconds=dg.EnvVar.int("VEXPORT_CHUNK_SECONDS")
        ),
    }


defs = dg.Definitions(
    assets=export_assets,
    jobs=[export_job, metrics_job],
    sensors=[composition_sensor],
    schedules=[metrics_rollup],
    resources=resources(),
)
