"""Errors the CLI prints as one line, never as a traceback: mistakes in user input, and
work the harness ran that failed (what failed, and where its log is)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in something the user gave us (a file, a flag, a field).

    The message names where the mistake is and how to fix it.
    """

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class ExecutionFailed(RuntimeError):
    """Something the harness ran failed (a worker process, a cluster task, an image build
    step); the message says what, and where to look or what to try."""
