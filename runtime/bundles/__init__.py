"""Shipping user code: bundles of a deployed folder, the code store in NATS, and importing it."""
