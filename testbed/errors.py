"""Errors caused by user input: printed as one line by the CLI, never as a traceback."""

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
