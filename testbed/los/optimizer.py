"""Resource optimisation: the CPU limit to give a job's next run on a node.

First run of a job: a share (85 %) of the chosen node's free CPU, capped at the
experiment's starting limit (400 m). Each next run: 10 % lower if the job's last run
met its period, 10 % higher if it did not, never above the chosen node's free CPU.
With `limit_per_node` the history is kept per node instead: a job's first run on each
node starts again from the first-run rule.
"""

from __future__ import annotations

from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams


def propose_limit(
    model: RuntimeModel, view: NodeView, params: LosParams, max_useful_m: float
) -> float:
    last = model.last_run_on(view.node) if params.limit_per_node else model.last_run()
    if last is None:
        limit = min(params.initial_free_share * view.cpu_free_m, params.initial_limit_m)
    elif last.met_period:
        limit = last.limit_m * (1.0 - params.step)
    else:
        limit = last.limit_m * (1.0 + params.step)
    ceiling = max(params.min_limit_m, min(view.cpu_free_m, max_useful_m))
    return min(max(limit, params.min_limit_m), ceiling)
