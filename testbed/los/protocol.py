"""The token, cycle and max-hop rule every scheduler, the twin's loop and the agents obey.

A job carries a token: the nodes it has visited, its source first. Moving it to a node
already in the token is a cycle, and the job is dropped; so is a move beyond `max_hops`
forwards from the source. This module is the one place that rule is written down.
"""

from __future__ import annotations

from collections.abc import Sequence

from testbed.los.decisions import DropReason

Token = tuple[str, ...]


def can_move(token: Token, max_hops: int) -> bool:
    """One more move keeps the job within max_hops (token = nodes visited, source first)."""
    return len(token) <= max_hops


def advance(token: Token, steps: Sequence[str], max_hops: int) -> tuple[Token, DropReason | None]:
    """Move the token through `steps` (relays, then the target), in order.

    A node already visited ends it as CYCLE, a move beyond max_hops as MAX_HOPS (the
    cycle is checked first). Returns the token as far as it got and the drop reason, or
    None when every step was taken.
    """
    for step in steps:
        if step in token:
            return token, DropReason.CYCLE
        if not can_move(token, max_hops):
            return token, DropReason.MAX_HOPS
        token = (*token, step)
    return token, None
