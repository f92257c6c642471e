"""Delivery: stores (a `Store` interface, `LocalStore`), publishing a version, ZIP bundles, signed links, the event store of links and downloads, the summary JSON."""
