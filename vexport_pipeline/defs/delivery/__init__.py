"""Dagster definitions of the delivery stage: the `delivery` and `delivery_metrics` assets and the rollup schedule."""
