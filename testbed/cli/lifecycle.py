"""`testbed up`, `down`, `bench-openstack` and `openstack-box`: testbeds brought up and
removed (through the providers' `up` and `down` hooks), the OpenStack box itself."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.cli.common import EXPERIMENTS_DIR
from testbed.errors import UserError
from testbed.providers.openstack.cli import cloud_flags, spec_from_args
from testbed.providers.registry import Provider

PHASES_OF_BOX = ("all", "install", "configure", "health", "status", "ready", "stop")


def _lifecycle(hook: str) -> tuple[list[Provider], list[Provider]]:
    """The providers with the `up` or `down` hook, and those without."""
    from testbed.providers import registry

    has = [p for p in registry.providers() if getattr(p, hook) is not None]
    return has, [p for p in registry.providers() if getattr(p, hook) is None]


def _and(names: list[str]) -> str:
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _provider_for(hook: str, testbed: str) -> Provider:
    """The provider `--testbed` names, if it has the hook; else a UserError naming those that do."""
    has, lacks = _lifecycle(hook)
    for provider in has:
        if provider.name == testbed:
            return provider
    doing = "brought up" if hook == "up" else "taken down"
    others = [p.name for p in lacks]
    needs = f" (the {_and(others)} need{'s' if len(others) == 1 else ''} nothing)" if others else ""
    raise UserError(
        f"flag --testbed {testbed}",
        f"only the {_and([p.name for p in has])} testbeds are {doing}{needs}",
        "use " + " or ".join(f"--testbed {p.name}" for p in has),
    )


def cmd_up(args: argparse.Namespace) -> int:
    up = _provider_for("up", args.testbed).up
    assert up is not None
    return up(args)


def cmd_down(args: argparse.Namespace) -> int:
    down = _provider_for("down", args.testbed).down
    assert down is not None
    return down(args)


def cmd_openstack_box(args: argparse.Namespace) -> int:
    import os

    from testbed.providers.openstack import box
    from testbed.providers.openstack.cloud import connect

    if os.geteuid() != 0 and args.phase not in ("status",):
        raise UserError("testbed openstack-box", "needs root", "run it as root (sudo)")
    rc = box.run_phase(args.phase)
    if rc != 0:
        print(f"openstack-box: setup.sh {args.phase} failed (exit {rc}); logs in /tmp/osbox/logs")
        return rc
    if args.phase in ("all", "configure", "health"):
        image = box.ensure_image(connect(box.BOX_CLOUD))
        print(
            f"openstack-box up: cloud '{box.BOX_CLOUD}' in ~/.config/openstack/clouds.yaml, "
            f"image '{image.name}'; try `testbed up --testbed openstack --cloud {box.BOX_CLOUD} "
            f"--image {image.name} --dry-run`"
        )
    return 0


def cmd_bench_openstack(args: argparse.Namespace) -> int:
    from testbed.providers.openstack.bench import bench_provisioning
    from testbed.spec.loader import load_layout

    spec, spec_file, cloud = spec_from_args(args)
    numbers = bench_provisioning(load_layout(Path(args.layout)), spec, cloud, spec_file)
    print(
        f"{numbers['servers']} servers on {cloud}: provisioning {numbers['provision_s']:.1f} s "
        f"(playbook), first create to last ACTIVE {numbers['servers_span_s']:.1f} s; slowest "
        f"single create {numbers['slowest_create_s']:.1f} s ({numbers['slowest_server']}), sum "
        f"of creates {numbers['sum_of_creates_s']:.1f} s"
    )
    print(
        f"ratio to the slowest single create: span {numbers['span_over_slowest']:.2f}x, whole "
        f"provisioning {numbers['provision_over_slowest']:.2f}x; creates overlapping on "
        f"average: {numbers['overlap']:.1f} (1 = one after another)"
    )
    print(
        f"teardown {numbers['teardown_s']:.1f} s, {numbers['removed']} resources removed, "
        f"remaining {numbers['remaining']}"
    )
    return 0 if numbers["remaining"] == 0 else 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`up`, `down`, `bench-openstack` and `openstack-box`."""
    up_ = sub.add_parser("up", help="bring a testbed up (local: network namespaces)")
    _testbed_flag(up_, "up")
    up_.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    up_.add_argument("--id", default="los", help="testbed id (names its namespaces)")
    _lifecycle_flags(up_, "up")
    up_.set_defaults(func=cmd_up)

    down_ = sub.add_parser("down", help="remove a testbed, also after a crash")
    _testbed_flag(down_, "down")
    down_.add_argument("--id", default="los")
    _lifecycle_flags(down_, "down")
    down_.set_defaults(func=cmd_down)

    bench_os = sub.add_parser(
        "bench-openstack", help="provision the layout on a cloud, time it, tear it down"
    )
    bench_os.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    bench_os.add_argument("--id", default="losbench", help="testbed id (names its resources)")
    bench_os.add_argument("--image", help="the image (overrides the spec's image)")
    cloud_flags(bench_os)
    bench_os.set_defaults(func=cmd_bench_openstack)

    osbox = sub.add_parser(
        "openstack-box", help="a real OpenStack control plane on this machine (root, Debian)"
    )
    osbox.add_argument("phase", nargs="?", default="all", choices=PHASES_OF_BOX)
    osbox.set_defaults(func=cmd_openstack_box)


def _testbed_flag(parser: argparse.ArgumentParser, hook: str) -> None:
    """--testbed: the providers with the hook, the first by default (an other name is refused
    by the command, with a line naming those)."""
    names = [p.name for p in _lifecycle(hook)[0]]
    parser.add_argument("--testbed", default=names[0], help=f"{' or '.join(names)}")


def _lifecycle_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Each provider's own flags of `up` or `down` (e.g. local: --cpu-scale; openstack: --cloud)."""
    for provider in _lifecycle(command)[0]:
        if provider.lifecycle_arguments is not None:
            provider.lifecycle_arguments(command, parser)
