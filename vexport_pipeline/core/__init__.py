"""The media core, with no Dagster, Starlette or click import, a folder per stage:
`spec/` (the composition model, loading, path policy, presets), `media/` (probe, timeline, FFmpeg
commands and runner, render, chunks, cache), `validation/` (checks, VMAF, playback, report visuals),
`delivery/` (stores, links, events, summary), `intake/` (inbox, registry). Beside them: `settings`
(every VEXPORT_* variable), `errors` (one hierarchy with stable codes), `records` (what stages hand
each other), `timecode` and `tables`."""
