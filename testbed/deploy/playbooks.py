"""Run the numbered playbooks (`playbooks/`) through ansible-runner.

The harness runs a playbook against an inventory it wrote, with the event stream
driving a progress bar; a failed or unreachable host ends the stage with one line that
names the playbook, the host, the task and ansible's message. The same playbooks run by
hand: `ansible-playbook -i <run>/deployment/inventory.yml playbooks/04-agents.yml
-e @<run>/deployment/extravars-04-agents.yml`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from testbed.deploy.stages import Stage
from testbed.paths import REPO_ROOT

PLAYBOOK_DIR = REPO_ROOT / "playbooks"


class DeployError(RuntimeError):
    """A stage failed on some host; the message says where and why."""


@dataclass
class StageResult:
    playbook: str
    status: str
    rc: int
    seconds: float
    tasks: int = 0
    results: int = 0
    changed: int = 0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "status": self.status,
            "rc": self.rc,
            "seconds": round(self.seconds, 3),
            "tasks": self.tasks,
            "host_results": self.results,
            "changed": self.changed,
            "failures": self.failures,
        }


def _message(result: Mapping[str, Any]) -> str:
    for item in result.get("results") or []:  # a loop: the first failed item says why
        if isinstance(item, Mapping) and item.get("failed"):
            return f"[{item.get('item', {}).get('id', item.get('item'))}] {_message(item)}"
    for key in ("msg", "stderr", "stdout"):
        text = str(result.get(key) or "").strip()
        if text:
            return text.splitlines()[-1][:300]
    return "failed"


def playbook_env(control_dir: Path | None = None) -> dict[str, str]:
    """ansible's settings for the harness's runs (the same work by hand without them).
    `control_dir`: where SSH keeps its shared connections (one per testbed, 0700)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if control_dir is not None:
        control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {
        "PATH": path if path.split(":")[0] == bin_dir else f"{bin_dir}:{path}",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        **({"ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)} if control_dir else {}),
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }


def run_stage(
    stage: Stage,
    inventory: Path,
    extravars: Mapping[str, Any],
    work_dir: Path,
    console: Console | None = None,
    forks: int = 16,
    limit: str | None = None,
    timeout_s: int = 600,
    control_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> StageResult:
    """Run one playbook; raise DeployError naming host, task and message if any host fails.

    `extra_env` reaches every process the run starts (also detached async jobs), so a
    later cleanup can find them."""
    playbook = str(Stage(stage))  # the file name, a plain str in the logs and results
    path = PLAYBOOK_DIR / playbook
    if not path.exists():
        raise DeployError(f"no playbook {path}")
    # ansible-runner runs ansible-playbook elsewhere: relative paths would not resolve
    inventory, work_dir = inventory.resolve(), work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    result = StageResult(playbook, "running", -1, 0.0)
    task_name = ""
    console = console or Console(stderr=True)
    columns = (
        TextColumn(f"[bold]{playbook}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[step]}"),
    )
    env = {**playbook_env(control_dir), **(extra_env or {})}
    os.environ["PATH"] = env["PATH"]  # ansible-runner looks ansible-playbook up here
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(playbook, total=None, step="")

        def on_event(event: dict[str, Any]) -> bool:
            nonlocal task_name
            kind = event.get("event", "")
            data = event.get("event_data", {})
            if kind == "playbook_on_task_start":
                task_name = data.get("task", "")
                result.tasks += 1
                progress.update(bar, step=task_name)
            elif kind in ("runner_on_ok", "runner_on_skipped"):
                result.results += 1
                result.changed += bool(data.get("res", {}).get("changed"))
                progress.advance(bar)
            elif kind in ("runner_on_failed", "runner_on_unreachable"):
                if kind == "runner_on_failed" and data.get("ignore_errors"):
                    return True
                result.results += 1
                host = data.get("host", "?")
                task = data.get("task", task_name)
                result.failures.append(f"{host}: {task}: {_message(data.get('res', {}))}")
                progress.advance(bar)
            return True

        runner = ansible_runner.run(
            private_data_dir=str(work_dir),
            project_dir=str(PLAYBOOK_DIR),
            playbook=playbook,
            inventory=str(inventory),
            extravars=dict(extravars),
            envvars=env,
            forks=forks,
            limit=limit,
            quiet=True,
            event_handler=on_event,
            rotate_artifacts=4,
            suppress_env_files=True,
            timeout=timeout_s,
        )
    result.seconds = time.perf_counter() - started
    result.status = str(runner.status)
    result.rc = int(runner.rc if runner.rc is not None else -1)
    if result.status == "canceled":  # ansible-runner took the user's Ctrl-C: pass it on
        raise KeyboardInterrupt
    if result.failures or result.status != "successful":
        where = "; ".join(result.failures[:3]) or _error_line(runner, result.status)
        more = f" (+{len(result.failures) - 3} more)" if len(result.failures) > 3 else ""
        raise DeployError(f"{playbook} failed: {where}{more}; full log under {work_dir}/artifacts")
    return result


def _error_line(runner: Any, status: str) -> str:
    """ansible-playbook's own first error (a playbook that does not load), if it said one."""
    with contextlib.suppress(Exception):
        for line in runner.stdout.read().splitlines():
            if line.startswith("[ERROR]") or line.startswith("ERROR!"):
                return f"ansible-playbook ended {status}: {line.strip()[:300]}"
    return f"ansible-playbook ended {status}"
