"""The Dagster layer, a folder per stage: `intake/` (the `source` asset, the inbox sensor), `media/`
(`segments`, `renditions`), `validation/` (`validation_report` and its blocking check), `delivery/`
(`delivery`, `delivery_metrics`, the rollup schedule); `resources.py` holds one resource per external
system and `failures.py` the error boundary. It calls the core and adds no media logic of its own.

The per-export asset graph: source -> segments -> renditions -> validation_report -> delivery -> delivery_metrics
(`assets.py`). Importing this package loads none of it, so the CLI's commands that only read the instance (`list`,
`status`) start without every asset module.
"""
