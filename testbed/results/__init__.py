"""The results store: the only writer of `results/`."""

from testbed.results.atomic import atomic_write_bytes, atomic_write_text
from testbed.results.store import RunStore

__all__ = ["RunStore", "atomic_write_bytes", "atomic_write_text"]
