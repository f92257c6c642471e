"""Delivery: stores (the `Store` interface, `LocalStore`), publishing a version, ZIP bundles,
signed links, the event store of links and downloads, and the summary JSON.
`S3Store` (S3 and S3-compatible buckets) and the named destinations file (`destinations.py`)."""
