"""Experiment planning and running, independent of the testbed that executes it."""
