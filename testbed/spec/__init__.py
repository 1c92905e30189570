"""Experiment and layout specifications: validated models loaded from YAML.

The modules are imported by name (`testbed.spec.layout`, `testbed.spec.loader`, ...):
the package itself imports nothing, so a node service that only reads a layout (the
drift daemon, an agent) does not load the experiment models and numpy with it."""
