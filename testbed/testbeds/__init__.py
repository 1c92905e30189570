"""Testbeds that run the cells of an experiment: the twin now; local and OpenStack next."""

from testbed.testbeds.base import CellOutcome, Testbed, make_testbed, testbed_names

__all__ = ["CellOutcome", "Testbed", "make_testbed", "testbed_names"]
