"""Tests of the delivery core: stores, links, the gateway logic, analytics."""
