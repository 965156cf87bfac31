"""Workflows built on the features: calibration, evaluation, pruning, the doctor, the demo's data."""
