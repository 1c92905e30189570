"""A timeplan action, dispatched to whatever applies the timeplan on a testbed.

Both the local testbed's direct faults (`testbed.providers.local.faults`) and the deployed
testbeds' faults over SSH (`testbed.deploy.remote_faults`) offer the same operations per
node; which operation an action means, and that `degrade` takes a link, lives here once.
"""

from __future__ import annotations

from typing import Protocol


class FaultTarget(Protocol):
    def leave(self, node: str) -> None: ...
    def join(self, node: str) -> None: ...
    def load(self, node: str, cpu_m: float) -> None: ...
    def stop_agent(self, node: str) -> None: ...
    def start_agent(self, node: str) -> None: ...
    def degrade(self, a: str, b: str, delay_ms: float) -> None: ...


def apply_action(
    target: FaultTarget,
    action: str,
    nodes: list[str],
    cpu_m: float | None,
    delay_ms: float | None = None,
) -> None:
    """Apply `action` to each of `nodes` (to the link `nodes` for `degrade`)."""
    if action == "degrade":
        a, b = nodes
        target.degrade(a, b, delay_ms or 0.0)
        return
    per_node = {
        "leave": target.leave,
        "join": target.join,
        "load": lambda node: target.load(node, cpu_m or 0.0),
        "agent-stop": target.stop_agent,
        "agent-start": target.start_agent,
    }
    if action not in per_node:
        raise ValueError(f"unknown timeplan action {action!r}")
    for node in nodes:
        per_node[action](node)
