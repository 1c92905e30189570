"""Shell commands the harness runs on a node over SSH during a cell (pure builders).

Every long-running service on a node is started with `setsid` and its process-group
id written to a pid file, so one `kill -- -PGID` stops it with every child it has
(a warm training worker, a replayer's helpers). The commands are plain POSIX sh (dash
on Debian does not take `kill -9 -- -PGID`, hence `kill -9 "-PGID"`), and quote every
path they take.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

BUSY_LOOP = "while True: pass"


def stop_group(pid_file: str, signal: str = "KILL") -> str:
    """Stop the process group named by `pid_file` (if any) and remove the file."""
    f = shlex.quote(pid_file)
    return f'if [ -f {f} ]; then kill -{signal} "-$(cat {f})" 2>/dev/null; rm -f {f}; fi'


def start_agent(python: str, agent_dir: str, wait_s: float = 60.0) -> str:
    """Start the node's agent again from the config.json in its work dir, and the
    cell's cell.json if 04-agents wrote one (its events file is kept: a restart appends to
    it), and wait until it says it is ready."""
    d = shlex.quote(agent_dir)
    tries = max(1, round(wait_s * 10))
    return (
        f"cd {d} && "
        + stop_group("agent.pid")
        + " && rm -f agent.out && "
        + "if [ -f cell.json ]; then cell='--cell cell.json'; else cell=; fi && "
        + f"(nohup setsid {shlex.quote(python)} -m testbed.agent --config config.json $cell "
        "> agent.out 2>> agent.log < /dev/null & echo $! > agent.pid) && "
        + f"for i in $(seq {tries}); do "
        "grep -q '\"ready\": true' agent.out 2>/dev/null && exit 0; sleep 0.1; done; "
        "echo 'agent did not become ready' >&2; exit 1"
    )


def start_load(python: str, node_dir: str, group: str, limit_m: float) -> str:
    """A busy process in the node's cgroup `group`, limited to `limit_m` millicores."""
    d = shlex.quote(node_dir)
    py = shlex.quote(python)
    return (
        f"cd {d} && "
        + stop_group("load.pid")
        + f" && (nohup setsid {py} -c {shlex.quote(BUSY_LOOP)} > /dev/null 2>&1 < /dev/null &"
        " echo $! > load.pid) && "
        + f"{py} -m testbed cgroup-join {shlex.quote(group)} --limit-m {limit_m:.1f} "
        '--pid "$(cat load.pid)"'
    )


def stop_load(node_dir: str) -> str:
    return stop_group(f"{node_dir}/load.pid")


def set_links(interfaces: Iterable[str], up: bool) -> str:
    """Bring the node's mesh interfaces up or down (the node joins or leaves)."""
    state = "up" if up else "down"
    names = list(interfaces)
    if not names:
        raise ValueError("a node without mesh interfaces cannot leave or join")
    return " && ".join(f"ip link set dev {shlex.quote(n)} {state}" for n in names)


def set_links_from_file(interfaces_file: str, up: bool) -> str:
    """As `set_links`, with the interface names in a file on the node (one per line;
    02-mesh writes it on VMs, where the names are found by MAC)."""
    state = "up" if up else "down"
    f = shlex.quote(interfaces_file)
    return (
        f'[ -s {f} ] || {{ echo "no mesh interfaces in {interfaces_file}" >&2; exit 1; }}; '
        f'for i in $(cat {f}); do ip link set dev "$i" {state} || exit 1; done'
    )


def write_file(path: str, content: str) -> str:
    """Write `content` to `path` atomically (temp file, then rename)."""
    p = shlex.quote(path)
    part = shlex.quote(path + ".part")
    return f"printf '%s\\n' {shlex.quote(content)} > {part} && mv -f {part} {p}"


def as_root(command: str, become: bool) -> str:
    """Run `command` as root through sudo (no password) where the SSH user is not root."""
    return f"sudo -n sh -c {shlex.quote(command)}" if become else command
