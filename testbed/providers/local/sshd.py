"""SSH into the local testbed's nodes: one sshd per node namespace, on the node's address.

On a cloud every VM runs sshd and the harness reaches it (directly, or through a jump
host); here every node namespace gets its own sshd bound to the node's address, with a
host key and an authorised client key made for this testbed, so the same playbooks and
the same log collection work on both. The controller (this process, ansible, fabric)
stays in the host's namespace and reaches a node through `testbed.providers.local.netns_relay`
as its SSH ProxyCommand.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.network.local_plan import LocalPlan
from testbed.providers.local.mesh import entered
from testbed.providers.local.provider import STATE_DIR, LocalState

SSH_PORT = 22


@dataclass(frozen=True)
class SshAccess:
    """How the controller logs into the nodes: key, known hosts, and the relay command."""

    directory: Path
    private_key: Path
    known_hosts: Path
    user: str = "root"

    def proxy_command(self, namespace: str) -> str:
        relay = [sys.executable, "-m", "testbed.providers.local.netns_relay", namespace]
        return shlex.join(relay) + " %h %p"

    def ssh_options(self, namespace: str) -> list[str]:
        """`ssh` arguments (an argv list) that reach the node in `namespace`."""
        options = [
            f"UserKnownHostsFile={self.known_hosts}",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
            f"ProxyCommand={self.proxy_command(namespace)}",
        ]
        return [arg for option in options for arg in ("-o", option)]

    def ssh_args(self, namespace: str) -> str:
        """The same as one shell-quoted string (ansible's `ansible_ssh_common_args`)."""
        return shlex.join(self.ssh_options(namespace))


def sshd_binary() -> str | None:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if Path(found).exists() else None


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )


def make_access(plan: LocalPlan, state: LocalState) -> SshAccess:
    """A client key, a host key and known_hosts for every node address of this testbed."""
    directory = STATE_DIR / state.testbed_id / "ssh"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    client, host = directory / "id_ed25519", directory / "host_ed25519"
    _keygen(client, f"controller@{state.testbed_id}")
    _keygen(host, f"nodes@{state.testbed_id}")
    (directory / "authorized_keys").write_text((directory / "id_ed25519.pub").read_text())
    host_key = " ".join((directory / "host_ed25519.pub").read_text().split()[:2])
    lines = [f"{plan.address_of(node)} {host_key}" for node in plan.namespaces]
    (directory / "known_hosts").write_text("\n".join(lines) + "\n")
    return SshAccess(directory, client, directory / "known_hosts")


def sshd_config(address: str, access: SshAccess, pid_file: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {address}",
            f"Port {SSH_PORT}",
            f"HostKey {access.directory / 'host_ed25519'}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {access.directory / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "LogLevel ERROR",
            "",
        ]
    )


def start_sshd(
    plan: LocalPlan, state: LocalState, access: SshAccess, timeout_s: float = 15.0
) -> dict[str, int]:
    """Start sshd in every node namespace; record them so `down` stops them."""
    binary = sshd_binary()
    if binary is None:
        raise RuntimeError("no sshd on this machine (install openssh-server)")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    processes = {}
    for node, namespace in plan.namespaces.items():
        config = access.directory / f"sshd-{node}.conf"
        config.write_text(
            sshd_config(plan.address_of(node), access, access.directory / f"sshd-{node}.pid")
        )
        log = open(access.directory / f"sshd-{node}.log", "wb")  # noqa: SIM115
        processes[node] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{namespace}", binary, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    pids = {f"sshd-{node}": p.pid for node, p in processes.items()}
    state.daemons.update(pids)
    state.save()
    deadline = time.monotonic() + timeout_s
    pending = set(plan.namespaces)
    while pending and time.monotonic() < deadline:
        for node in list(pending):
            if processes[node].poll() is not None:
                log_text = (access.directory / f"sshd-{node}.log").read_text()[-1000:]
                raise RuntimeError(f"sshd of {node} exited: {log_text}")
            with (
                contextlib.suppress(OSError),
                entered(plan.namespaces[node]),
                socket.create_connection((plan.address_of(node), SSH_PORT), timeout=1),
            ):
                pending.discard(node)
        if pending:
            time.sleep(0.1)
    if pending:
        raise RuntimeError(f"sshd not listening after {timeout_s} s on {sorted(pending)}")
    return pids
