"""los-testbed: reproducible testbed and experiment harness for Local-Optimistic Scheduling."""

__version__ = "0.1.0"
