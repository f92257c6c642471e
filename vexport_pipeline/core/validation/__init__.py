"""Validation of renditions: `checks/` (one module per family, run in order by `check_file`),
`verdict` (issues, reports, score), `analyze` (the one decoding pass), `vmaf` and `reference`
(quality against what the encode saw), `playback` (Chromium), `visuals` (contact sheets, plots,
tables) and `export` (every rendition of an export)."""
