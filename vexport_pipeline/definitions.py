"""Assembles the Dagster definitions; every piece lives in its own module."""

import dagster as dg

from .assets import export_assets
from .config import apply_env_defaults
from .jobs import export_job, metrics_job
from .resources import EncoderResource, VexportResource
from .schedules import metrics_rollup
from .sensors import composition_sensor


apply_env_defaults()  # only fills in unset VEXPORT_* variables with the embedded defaults


def resources() -> dict:
    return {"vexport": VexportResource(home=dg.EnvVar("VEXPORT_HOME"), media_roots=dg.EnvVar("VEXPORT_MEDIA_ROOTS"),
                                       public_url=dg.EnvVar("VEXPORT_PUBLIC_URL")),
            "encoders": EncoderResource(hardware=dg.EnvVar("VEXPORT_HARDWARE"), chunk_seconds=dg.EnvVar.int("VEXPORT_CHUNK_SECONDS"))}


defs = dg.Definitions(
    assets=export_assets,
    jobs=[export_job, metrics_job],
    sensors=[composition_sensor],
    schedules=[metrics_rollup],
    resources=resources(),
)
