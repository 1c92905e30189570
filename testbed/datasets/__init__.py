"""The dataset registry: every kind of stream data a spec can name in
`streams.per_node[i].data`.

A dataset (`base.Dataset`) is its schema (columns and the features a detector reads),
where its files are and how one loads, a synthetic generator with the same schema and
the detector model its streams feed by default. A new dataset is one module that builds
a `Dataset`, plus one `register(...)` line below (see docs/extending.md).
"""

from __future__ import annotations

from pathlib import Path

from testbed.datasets import pollution, traffic
from testbed.datasets.base import Dataset

__all__ = ["DATASETS", "Dataset", "for_model", "get", "names", "register", "sources", "unregister"]

DATASETS: dict[str, Dataset] = {}
"""Every registered dataset by name, in registration order."""


def register(dataset: Dataset) -> None:
    """Make `dataset` the one called `dataset.name` (in specs and on the command line)."""
    if dataset.name in DATASETS:
        raise ValueError(f"dataset '{dataset.name}' is registered twice")
    DATASETS[dataset.name] = dataset


def unregister(name: str) -> None:
    del DATASETS[name]


def names() -> frozenset[str]:
    return frozenset(DATASETS)


def get(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}', known: {sorted(DATASETS)}") from None


def for_model(model: str) -> Dataset:
    """The dataset a detector model is calibrated and benchmarked on: the first registered
    whose default model it is. (Streams take theirs from the spec's `data`, not from this.)"""
    for dataset in DATASETS.values():
        if dataset.default_model == model:
            return dataset
    raise KeyError(f"no dataset feeds model '{model}' by default, known: {sorted(DATASETS)}")


def sources() -> dict[str, Path]:
    """The file each dataset's streams replay, where its data is present (else synthetic
    streams); each is loaded once here, so a damaged one stops a run before any cell starts,
    naming the file and the line."""
    found: dict[str, Path] = {}
    for dataset in DATASETS.values():
        path = dataset.source()
        if path is not None:
            found[dataset.name] = path
    return found


register(traffic.DATASET)
register(pollution.DATASET)
