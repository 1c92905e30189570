"""The twin provider: the discrete-event model of the testbed (`testbed.twin`) runs each
cell in simulated time; the only provider with global knowledge and the offline optimum."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testbed.providers.base import Testbed
from testbed.providers.registry import Provider, register
from testbed.spec.experiment import ResolvedExperiment


def _make(experiment: ResolvedExperiment, options: Mapping[str, Any]) -> Testbed:
    from testbed.providers.twin.testbed import TwinTestbed

    return TwinTestbed(experiment)


PROVIDER = register(Provider(name="twin", make=_make, global_view=True, parallel_cells=True))
