"""Running an experiment's sweep (cells from `testbed.cells`) on whichever testbed executes it."""
