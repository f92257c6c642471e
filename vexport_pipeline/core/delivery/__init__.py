"""Delivery: stores (the `Store` interface, `LocalStore`), publishing a version, ZIP bundles,
signed links, the event store of links and downloads, and the summary JSON."""
