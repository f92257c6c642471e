"""Retention and archive: the daily job that archives, deletes and cleans up (to be written)."""
