"""Jobs of the workload: CPU-limited processes, training, prediction, the model repository."""
