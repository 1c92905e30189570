"""Requests between agents carry an HMAC-SHA256 over method, path, time and body.

Headers: `X-Los-Time` (unix seconds) and `X-Los-Signature` (hex). A request is accepted
when the signature matches the testbed's shared secret and its time is within the
allowed skew (replays of old requests are refused). `new_secret` makes a testbed's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

TIME_HEADER = "X-Los-Time"
SIGNATURE_HEADER = "X-Los-Signature"


def new_secret() -> str:
    """A fresh shared secret for a testbed's agents (hex, 32 bytes)."""
    return secrets.token_hex(32)


def signature(secret: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    message = b"\n".join([method.upper().encode(), path.encode(), timestamp.encode(), body])
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(
    secret: bytes, method: str, path: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = f"{now if now is not None else time.time():.3f}"
    return {
        TIME_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, method, path, timestamp, body),
    }


def verify(
    secret: bytes,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    now: float | None = None,
    max_skew_s: float = 30.0,
) -> str | None:
    """None when the request is authentic, else why it is not."""
    timestamp = headers.get(TIME_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not timestamp or not given:
        return "unsigned"
    try:
        sent = float(timestamp)
    except ValueError:
        return "bad time"
    if abs((now if now is not None else time.time()) - sent) > max_skew_s:
        return "stale"
    expected = signature(secret, method, path, timestamp, body)
    return None if hmac.compare_digest(expected, given) else "bad signature"
