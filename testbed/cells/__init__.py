"""What one cell of a sweep is: the cell and its seeds, streams, outcome, result rows, faults,
and a cell being run (its state and timeline).

Below both the twin and the testbeds that run cells (and the experiment runner above them):
it imports only `testbed.spec` and `testbed.los` (a run's record), never a testbed, the twin
or the runner.
"""
