"""Benchmarks that print numbers: the paper protocol on the twin, schedulers vs the optimum, scale,
workload."""
