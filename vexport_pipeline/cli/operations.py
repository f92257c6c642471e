"""`vexport list`, `status`, `cancel`, `reexport`: watching and steering exports (argument parsing and output
over the core and the Dagster instance)."""

COMMANDS: list = []
