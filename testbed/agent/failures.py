"""How a request between agents fails: refused by the peer (`Rejected`) or no agent there.

`agent_down` tells a refused connection (the node is reachable, its agent is not running)
from every other failure; the agent drops the job as `agent-down` then.
"""

from __future__ import annotations

import urllib.error


class Rejected(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def agent_down(exc: BaseException) -> bool:
    """Whether a request failed because the node refused the connection: the network
    reached it, but no agent listens there (it crashed or was stopped)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, not forever
        if seen is None:
            break
        reason = seen.reason if isinstance(seen, urllib.error.URLError) else seen
        if isinstance(reason, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
