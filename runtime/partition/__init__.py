"""Partitioned models: the coordinator, the shards workers serve, the data plane between them,
its cost model and calibration."""
