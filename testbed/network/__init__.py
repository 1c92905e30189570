"""Pure network descriptions: topology from a layout, latency-drift timelines."""
