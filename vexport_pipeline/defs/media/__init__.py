"""Dagster definitions of the media stage: the `segments` asset and the `renditions` graph asset
(plan, encode steps in pool `gpu`, assemble)."""
