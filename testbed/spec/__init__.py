"""Experiment and layout specifications: validated models loaded from YAML."""

from testbed.spec.experiment import ExperimentSpec, LosParams, ResolvedExperiment
from testbed.spec.layout import LayoutSpec
from testbed.spec.loader import load_experiment, load_layout

__all__ = [
    "ExperimentSpec",
    "LayoutSpec",
    "LosParams",
    "ResolvedExperiment",
    "load_experiment",
    "load_layout",
]
