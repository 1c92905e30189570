"""The discrete-event twin of the testbed (SimPy): same LOS core, same results format."""
