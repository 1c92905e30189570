"""The local testbed: the layout in network namespaces on this machine (effects only)."""
