"""The operations stage: what runs beside the exports. `retention.py` (the daily retention and archive job)
and `notifications.py` (signed webhooks when an export run ends); `runs.py` reads and steers runs for the CLI,
`batch.py` queues a batch's runs and reads them back."""
