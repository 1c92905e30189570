"""Extra one-way delay on single links (the timeplan's `degrade`), on top of the drift.

Pure data and its file format. The twin adds the extra to a link's latency; on the local
testbed `testbed.providers.local.faults` writes it to `OVERRIDES_FILE` next to the NFQUEUE delay
daemon's log (temporary file, then rename), and the daemon re-reads the file whenever
it changes (a new inode, modification time or size).

The file is JSON: `{"links": [{"a": "edge-1", "b": "edge-2", "extra_ms": 40.0}]}`; a
link not listed has no extra, and the extra applies in both directions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

OVERRIDES_FILE = "delay-overrides.json"

LinkPair = tuple[str, str]


def link_pair(a: str, b: str) -> LinkPair:
    """The link between two nodes, whichever end is named first."""
    return (a, b) if a <= b else (b, a)


def overrides_to_json(extra_ms: Mapping[LinkPair, float]) -> str:
    links = [
        {"a": a, "b": b, "extra_ms": float(ms)} for (a, b), ms in sorted(extra_ms.items()) if ms > 0
    ]
    return json.dumps({"links": links})


def overrides_from_json(text: str) -> dict[LinkPair, float]:
    """Parse an overrides file; raises ValueError on anything but the format above."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("links"), list):
        raise ValueError('expected {"links": [...]}')
    extra: dict[LinkPair, float] = {}
    for entry in data["links"]:
        ms = float(entry["extra_ms"])
        if ms < 0:
            raise ValueError(f"negative extra delay {ms} ms")
        extra[link_pair(str(entry["a"]), str(entry["b"]))] = ms
    return extra
