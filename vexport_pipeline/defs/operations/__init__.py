"""The operations stage: what runs beside the exports (retention and archive, notifications). Each module
adds its assets, jobs, schedules and sensors to the lists below, which `definitions.py` merges."""

ASSETS: list = []
JOBS: list = []
SCHEDULES: list = []
SENSORS: list = []
