"""Where the repository lies: the root that holds experiments/, playbooks/ and requirements.lock."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
