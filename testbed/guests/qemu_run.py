"""Guests of a layout booted under QEMU on this host (root): bridges and taps, a disk
overlay and a seed per guest, one QEMU process each, SSH once they are up.

Everything it creates is named after the testbed id and recorded in its run directory
(`guests.json`: the plan, QEMU's pids); `stop` ends only those pids and deletes only
those interfaces, also after a crash of the process that started them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed.errors import ExecutionFailed, UserError
from testbed.guests.qemu_plan import (
    GUEST_SHARE,
    GuestsPlan,
    host_network_commands,
    host_network_teardown,
    qemu_command,
    seed_files,
)

BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"
"""cloud-init writes it when its last stage is done (keys, network, mounts, sshd)."""


def missing_host_tools() -> list[str]:
    tools = {
        "qemu-system-x86_64": "qemu-system-x86",
        "qemu-img": "qemu-utils",
        "mcopy": "mtools",
        "mkfs.vfat": "dosfstools",
    }
    return sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ExecutionFailed(f"{' '.join(argv)}: {result.stderr.strip()[:300]}")


def _make_seed(path: Path, files: dict[str, str]) -> None:
    """A FAT disk labelled CIDATA holding the NoCloud files (mtools: no mount needed)."""
    staging = path.with_suffix(".d")
    staging.mkdir(exist_ok=True)
    for name, text in files.items():
        (staging / name).write_text(text)
    path.unlink(missing_ok=True)
    _run(["mkfs.vfat", "-n", "CIDATA", "-C", str(path), "2048"])
    _run(["mcopy", "-o", "-i", str(path), *[str(staging / n) for n in files], "::"])


class Guests:
    """The guests of `plan`, booted from `image` (a qcow2 that each guest overlays)."""

    def __init__(self, plan: GuestsPlan, image: Path, run_dir: Path, share: Path) -> None:
        self.plan, self.image, self.run_dir, self.share = plan, image, run_dir, share
        self.pids: dict[str, int] = {}
        self.key = run_dir / "id_ed25519"

    # --- bring up ----------------------------------------------------------------------------
    def start(self, say: Callable[[str], None] = print) -> None:
        missing = missing_host_tools()
        if missing:
            raise UserError(
                "guests",
                f"booting guests needs Debian packages that are missing: {' '.join(missing)}",
                f"apt-get install {' '.join(missing)}",
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._record()  # before anything exists: a crash from here on can be cleaned up
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        public = self.key.with_suffix(".pub").read_text()
        site = f"{GUEST_SHARE}/.venv/lib/python3.11/site-packages"
        python_path = f"{GUEST_SHARE}:{site}"
        for argv in host_network_commands(self.plan):
            _run(argv)
        for name, guest in self.plan.guests.items():
            disk = self.run_dir / f"{name}.qcow2"
            overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
            _run([*overlay, "-b", str(self.image), str(disk)])
            seed = self.run_dir / f"{name}.seed.img"
            _make_seed(seed, seed_files(self.plan, guest, public, python_path))
            argv = qemu_command(guest, disk, seed, self.share, self.run_dir)
            with (self.run_dir / f"{name}.qemu.log").open("wb") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
            self.pids[name] = proc.pid
            self._record()
            say(f"{name}: QEMU pid {proc.pid}, {guest.address}")

    def _record(self) -> None:
        state = {"plan": asdict(self.plan), "pids": self.pids, "image": str(self.image)}
        tmp = self.run_dir / "guests.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.run_dir / "guests.json")

    def wait_for_ssh(self, timeout_s: float = 600.0, say: Callable[[str], None] = print) -> float:
        """Seconds until every guest answered over SSH with cloud-init finished: before
        that, SSH may answer once and then refuse while cloud-init restarts sshd."""
        started = time.monotonic()
        waiting = set(self.plan.guests)
        while waiting:
            for name in sorted(waiting):
                self._check_alive(name)
                result = self.ssh(name, f"test -e {BOOT_FINISHED}", timeout_s=15, check=False)
                if result.returncode == 0:
                    waiting.discard(name)
                    say(f"{name}: SSH after {time.monotonic() - started:.0f} s")
            if waiting and time.monotonic() - started > timeout_s:
                raise TimeoutError(f"no SSH from {sorted(waiting)} after {timeout_s:.0f} s")
            if waiting:
                time.sleep(3)
        return time.monotonic() - started

    def _check_alive(self, name: str) -> None:
        pid = self.pids[name]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log = (self.run_dir / f"{name}.qemu.log").read_text()[-500:]
            raise ExecutionFailed(f"{name}: QEMU (pid {pid}) ended: {log}") from None

    def ssh_argv(self, name: str) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10", f"root@{self.plan.guests[name].address}",
        ]  # fmt: skip

    def ssh(
        self, name: str, command: str, timeout_s: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [*self.ssh_argv(name), command],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess([name, command], 124, "", "timed out")
        if check and result.returncode != 0:
            raise ExecutionFailed(
                f"{name}: `{command}` exited {result.returncode}: {result.stderr.strip()[:300]}"
            )
        return result

    # --- tear down ---------------------------------------------------------------------------
    def stop(self) -> None:
        stop_recorded(self.run_dir)


def stop_recorded(run_dir: Path, grace_s: float = 10.0) -> None:
    """End the QEMU processes recorded in `run_dir` (only those pids, and only if they
    are still QEMU) and delete the testbed's taps and bridges."""
    path = run_dir / "guests.json"
    if not path.exists():
        return
    state: dict[str, Any] = json.loads(path.read_text())
    pids = [int(p) for p in state.get("pids", {}).values()]
    alive = [pid for pid in pids if _is_qemu(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_is_qemu(pid) for pid in alive):
        time.sleep(0.2)
    for pid in alive:
        if _is_qemu(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    plan = _plan_from(state["plan"])
    for argv in host_network_teardown(plan):
        subprocess.run(argv, capture_output=True, check=False)


def _is_qemu(pid: int) -> bool:
    try:
        return "qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _plan_from(data: dict[str, Any]) -> GuestsPlan:
    from testbed.guests.qemu_plan import GuestNic, GuestPlan

    guests = {}
    for name, g in data["guests"].items():
        guests[name] = GuestPlan(
            node=g["node"],
            index=g["index"],
            address=g["address"],
            mgmt=GuestNic(**g["mgmt"]),
            mesh=tuple(GuestNic(**n) for n in g["mesh"]),
            memory_mb=g["memory_mb"],
            vcpus=g["vcpus"],
        )
    return GuestsPlan(
        data["testbed_id"], data["host_address"], data["prefix"], data["bridges"], guests
    )
