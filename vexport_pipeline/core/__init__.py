"""The media core: manifests, presets, probing, command building, running FFmpeg,
validation, storage and link signing. No Dagster import anywhere below this package."""
