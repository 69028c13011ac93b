"""The engine's kernel: executor, futures, events, notifications, devices and the data pipeline
core."""
