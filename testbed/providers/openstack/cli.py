"""The OpenStack provider's command-line flags and the options they give a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cloud_flags(parser: argparse.ArgumentParser) -> None:
    """--cloud and --openstack-spec: which cloud, and how the layout maps onto it."""
    parser.add_argument("--cloud", help="openstack: the clouds.yaml entry (default: OS_CLOUD)")
    parser.add_argument(
        "--openstack-spec",
        help="openstack: how the layout maps onto the cloud (default experiments/openstack.yaml)",
    )


def run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of runs on --testbed openstack (the servers are provisioned for the run)."""
    cloud_flags(parser)
    parser.add_argument("--id", help="openstack: testbed id (default: the spec's)")
    parser.add_argument("--image", help="openstack: the image (overrides the spec's image)")
    parser.add_argument(
        "--keep", action="store_true", help="openstack: leave the servers up after the run"
    )


def spec_from_args(args: argparse.Namespace) -> tuple[Any, str, str]:
    """The OpenStack spec, its file and the cloud that the flags name."""
    from testbed.providers.openstack.config import resolve_cloud
    from testbed.providers.openstack.provider import load_spec

    spec, spec_file = load_spec(
        Path(args.openstack_spec) if args.openstack_spec else None,
        testbed_id=args.id,
        image=getattr(args, "image", None),
    )
    return spec, spec_file, resolve_cloud(args.cloud)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's cloud, spec and whether its servers stay after the run."""
    spec, spec_file, cloud = spec_from_args(args)
    return {"spec": spec, "spec_file": spec_file, "cloud": cloud, "keep": bool(args.keep)}
