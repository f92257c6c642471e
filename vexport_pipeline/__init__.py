"""vexport: a Dagster-native video export and delivery pipeline.

Layers, imports pointing down only: `cli/` (the `vexport` command) and `definitions.py` (Dagster's
entry point) -> `defs/` (the Dagster layer, a folder per stage) -> `core/` (the media core: no
Dagster, Starlette or click import).
"""
