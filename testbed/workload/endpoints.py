"""HOST:PORT flags of the replayer and the prediction job, checked before any socket opens."""

from __future__ import annotations

import ipaddress
import re

from testbed.errors import UserError

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def is_host(text: str) -> bool:
    """An IP address or a syntactically valid host name (nothing is looked up)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return len(text) <= 253 and _HOSTNAME.fullmatch(text) is not None


def parse_host_port(text: str, flag: str, allow_any_port: bool = False) -> tuple[str, int]:
    """`HOST:PORT` (or `[IPv6]:PORT`) as (host, port). Port 1-65535, or 0 (any free port)
    where `allow_any_port` (a listening socket)."""
    example = "e.g. 127.0.0.1:7001"
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise UserError(flag, f"not HOST:PORT: {text!r}", f"give a host and a port, {example}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not is_host(host):
        raise UserError(flag, f"{host!r} is not a host name or IP address", example)
    if not port.isdigit():
        raise UserError(flag, f"port {port!r} is not a number", example)
    number = int(port)
    lowest = 0 if allow_any_port else 1
    if not lowest <= number <= 65535:
        raise UserError(flag, f"port {number} is outside {lowest}-65535", example)
    return host, number
