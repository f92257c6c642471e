"""Signed webhooks on delivered, failed and canceled exports (to be written)."""
