"""python -m testbed.agent --config CONFIG.json [--cell CELL.json]: run one LOS agent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed.agent.config import AgentConfig
from testbed.agent.http import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.agent")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument(
        "--cell", type=Path, help="the cell's settings over the config (scheduler, load)"
    )
    args = parser.parse_args(argv)
    serve(AgentConfig.load(args.config, args.cell))
    return 0


if __name__ == "__main__":
    sys.exit(main())
