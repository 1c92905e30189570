"""The stream wire format: length-prefixed JSON frames over TCP.

Each frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8
JSON. A sample frame is an object

    {"stream": "s01-traffic", "seq": 17, "time": "2014-08-01T09:15:00", "values": [..]}

with `seq` counting from 0 without gaps, `time` the sample's own timestamp and `values`
the detector's features in a fixed order. A frame of length 0 ends the stream.
Frames above 1 MiB are refused.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20


class FrameError(ValueError):
    pass


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


END = HEADER.pack(0)


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages (None marks the end)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any] | None]:
        self._buffer += data
        out: list[dict[str, Any] | None] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            if len(self._buffer) < HEADER.size + length:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            out.append(json.loads(body) if length else None)
        return out


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream (or a closed connection)."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    (length,) = HEADER.unpack(header)
    if length == 0:
        return None
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return dict(json.loads(await reader.readexactly(length)))
