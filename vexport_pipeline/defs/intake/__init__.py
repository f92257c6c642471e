"""Dagster definitions of the intake stage: the `source` asset and the inbox sensor."""
