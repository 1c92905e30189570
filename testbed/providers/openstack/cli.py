"""The OpenStack provider's command-line flags, the options they give a run, and its
`testbed up` and `testbed down` (servers provisioned on a cloud, and removed)."""

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


def lifecycle_flags(command: str, parser: argparse.ArgumentParser) -> None:
    """`up` and `down`: --cloud and --openstack-spec; `up` also --image and --dry-run."""
    cloud_flags(parser)
    if command == "up":
        parser.add_argument("--image", help="openstack: the image (overrides the spec's image)")
        parser.add_argument(
            "--dry-run", action="store_true", help="openstack: pre-flight and print the plan only"
        )


def cli_up(args: argparse.Namespace) -> int:
    from testbed.providers.openstack.provider import up
    from testbed.spec.loader import load_layout

    spec, spec_file, cloud = spec_from_args(args)
    result = up(load_layout(Path(args.layout)), spec, cloud, spec_file, dry_run=args.dry_run)
    if args.dry_run:
        for line in result.plan.describe():
            print(line)
        print(f"dry run: pre-flight passed on cloud {cloud}; nothing was created")
        return 0
    again = f" ({len(result.recreated)} failed servers recreated)" if result.recreated else ""
    print(
        f"{spec.testbed_id}: {len(result.plan.servers)} servers ACTIVE on {cloud} in "
        f"{result.seconds:.1f} s{again}; inventory {result.inventory}; "
        f"`testbed down --testbed openstack --cloud {cloud} --id {spec.testbed_id}` removes it"
    )
    return 0


def cli_down(args: argparse.Namespace) -> int:
    from testbed.providers.openstack.provider import down

    spec, _, cloud = spec_from_args(args)
    removed_by_kind, left = down(spec.testbed_id, cloud)
    gone = ", ".join(f"{n} {k}" for k, n in removed_by_kind.items() if n) or "nothing"
    print(f"{spec.testbed_id} on {cloud}: removed {gone}; remaining: {sum(left.values())}")
    return 0 if sum(left.values()) == 0 else 1
