"""vexport: a Dagster-native video export and delivery pipeline.

`vexport_pipeline.core` is the media core (no Dagster import); the rest is the Dagster layer.
"""
