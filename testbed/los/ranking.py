"""Rank neighbours by I_r + I_l: index by utilisation plus index by latency."""

from __future__ import annotations

from collections.abc import Sequence

from testbed.los.views import NodeView


def _min_rank(values: Sequence[float]) -> list[int]:
    """Index of each value in the ascending order; equal values share the lower index."""
    order = sorted(values)
    first = {}
    for i, v in enumerate(order):
        first.setdefault(v, i)
    return [first[v] for v in values]


def rank(views: Sequence[NodeView]) -> list[NodeView]:
    """Views ordered best first: lowest I_r + I_l, then lower latency, then node name."""
    if not views:
        return []
    i_r = _min_rank([round(v.utilisation, 9) for v in views])
    i_l = _min_rank([round(v.latency_ms, 9) for v in views])
    keyed = sorted(
        zip(views, i_r, i_l, strict=True),
        key=lambda item: (item[1] + item[2], item[0].latency_ms, item[0].node),
    )
    return [view for view, _, _ in keyed]
