"""Real, enforced CPU limits in millicores: cgroup v1 (`cpu` + `cpuacct`) or v2 (`cpu.max`).

Which one exists is detected at run time. On cgroup v1 the `cpu` and `cpuacct`
controllers may be separate hierarchies (as on the development machine) or co-mounted;
a group is created in each hierarchy that holds one of them. A child's quota may not
exceed its parent's on v1, so parents are limited before children are raised and
children shrunk before parents. Quota arithmetic is pure and lives at the top.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CFS_PERIOD_US = 100_000
CFS_MIN_QUOTA_US = 1_000
ROOT = Path("/sys/fs/cgroup")
CGROUP_ROOT = "los-testbed"  # the testbeds' groups, relative to a hierarchy's root

Flavor = Literal["v1", "v2"]


def quota_us(millicores: float, period_us: int = CFS_PERIOD_US) -> int:
    """CFS quota for a limit in millicores (1000 m = one core), at least the kernel minimum."""
    if millicores <= 0:
        raise ValueError(f"a CPU limit must be positive, got {millicores} m")
    return max(CFS_MIN_QUOTA_US, round(millicores / 1000.0 * period_us))


def cpu_max_line(millicores: float | None, period_us: int = CFS_PERIOD_US) -> str:
    """cgroup v2 `cpu.max` content; None means no limit."""
    if millicores is None:
        return f"max {period_us}"
    return f"{quota_us(millicores, period_us)} {period_us}"


class CgroupUnavailable(RuntimeError):
    """No writable cgroup CPU controller here (not root, or none mounted)."""


@dataclass(frozen=True)
class Hierarchy:
    flavor: Flavor
    cpu_root: Path
    acct_root: Path

    def describe(self) -> str:
        if self.flavor == "v2":
            return f"cgroup v2 at {self.cpu_root} (cpu.max, cpu.stat)"
        same = self.cpu_root == self.acct_root
        return f"cgroup v1, cpu at {self.cpu_root}, cpuacct at {self.acct_root}" + (
            " (co-mounted)" if same else " (separate hierarchies)"
        )


def detect(root: Path = ROOT) -> Hierarchy:
    """Find a writable CPU controller, v2 first, else v1; raise CgroupUnavailable."""
    controllers = root / "cgroup.controllers"
    has_cpu = controllers.exists() and "cpu" in controllers.read_text().split()
    if has_cpu and os.access(root, os.W_OK):
        return Hierarchy("v2", root, root)
    for cpu_dir in (root / "cpu", root / "cpu,cpuacct"):
        if (cpu_dir / "cpu.cfs_quota_us").exists():
            acct = root / "cpuacct"
            acct_dir = acct if (acct / "cpuacct.usage").exists() else cpu_dir
            if os.access(cpu_dir, os.W_OK) and os.access(acct_dir, os.W_OK):
                return Hierarchy("v1", cpu_dir.resolve(), acct_dir.resolve())
    raise CgroupUnavailable(
        f"no writable cgroup CPU controller under {root} (needs root and cgroup v1 cpu or v2)"
    )


def enable_cpu_below(root: Path, relative: str) -> None:
    """cgroup v2: create the ancestors of `relative` and enable the cpu controller in the
    root's and each ancestor's `cgroup.subtree_control`, so the group gets `cpu.max`
    (systemd machines hand it down to few groups; a VM's root does not by default)."""
    current = root
    for part in [p for p in relative.split("/") if p]:
        control = current / "cgroup.subtree_control"
        enabled = control.read_text().split() if control.exists() else []
        if "cpu" not in enabled:
            control.write_text("+cpu")
        current = current / part
        current.mkdir(exist_ok=True)


class CpuGroup:
    """One cgroup (in both v1 hierarchies where they are separate) with a CPU limit."""

    def __init__(self, hierarchy: Hierarchy, relative: str) -> None:
        self.hierarchy = hierarchy
        self.relative = relative.strip("/")
        self.cpu_dir = hierarchy.cpu_root / self.relative
        self.acct_dir = hierarchy.acct_root / self.relative

    @property
    def dirs(self) -> list[Path]:
        return list(dict.fromkeys([self.cpu_dir, self.acct_dir]))

    def create(self) -> CpuGroup:
        if self.hierarchy.flavor == "v2":  # every ancestor must hand `cpu` down
            enable_cpu_below(self.hierarchy.cpu_root, self.relative)
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        return self

    def child(self, name: str) -> CpuGroup:
        return CpuGroup(self.hierarchy, f"{self.relative}/{name}")

    def set_limit_m(self, millicores: float | None) -> None:
        if self.hierarchy.flavor == "v2":
            (self.cpu_dir / "cpu.max").write_text(cpu_max_line(millicores))
            return
        (self.cpu_dir / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        quota = -1 if millicores is None else quota_us(millicores)
        (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))

    def limit_m(self) -> float | None:
        if self.hierarchy.flavor == "v2":
            quota, period = (self.cpu_dir / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period) * 1000
        quota = int((self.cpu_dir / "cpu.cfs_quota_us").read_text())
        period = int((self.cpu_dir / "cpu.cfs_period_us").read_text())
        return None if quota < 0 else quota / period * 1000

    def add_pid(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        return sorted(pids)

    def usage_s(self) -> float:
        """CPU time used by the group's processes so far, in seconds."""
        if self.hierarchy.flavor == "v2":
            for line in (self.cpu_dir / "cpu.stat").read_text().splitlines():
                key, value = line.split()
                if key == "usage_usec":
                    return int(value) / 1e6
            raise RuntimeError(f"{self.cpu_dir}/cpu.stat has no usage_usec")
        return int((self.acct_dir / "cpuacct.usage").read_text()) / 1e9

    def throttled(self) -> dict[str, int]:
        stat = self.cpu_dir / "cpu.stat"
        if not stat.exists():
            return {}
        return {k: int(v) for k, v in (line.split() for line in stat.read_text().splitlines())}

    def remove(self, kill: bool = True, timeout_s: float = 5.0) -> None:
        """Remove the group (and its children), killing what still runs in it."""
        for d in self.dirs:
            if not d.exists():
                continue
            for sub in sorted((p for p in d.iterdir() if p.is_dir()), reverse=True):
                CpuGroup(self.hierarchy, f"{self.relative}/{sub.name}").remove(kill, timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.pids() and kill and time.monotonic() < deadline:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.02)
        for d in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()


def enter_preexec(group: CpuGroup) -> object:
    """A `preexec_fn` that moves the new process into `group` before it runs anything."""

    def _enter() -> None:
        group.add_pid(os.getpid())

    return _enter
