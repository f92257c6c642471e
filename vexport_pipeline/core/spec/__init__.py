"""The composition spec: the manifest model (`composition`), loading it safely with the preset check
and the source path policy (`loading`), and the targets and platform presets (`presets`, with the
built-ins as data in `presets.yaml`)."""
