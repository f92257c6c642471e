"""Intake: the inbox the sensor watches (compositions and bare videos) and the registry of accepted compositions."""
