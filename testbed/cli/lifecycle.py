"""`testbed up`, `down`, `bench-openstack` and `openstack-box`: testbeds brought up and
removed (local network namespaces, OpenStack servers, the OpenStack box itself)."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.cli.common import EXPERIMENTS_DIR, _number
from testbed.errors import UserError
from testbed.providers.openstack.cli import cloud_flags, spec_from_args

PHASES_OF_BOX = ("all", "install", "configure", "health", "status", "ready", "stop")


def cmd_up_openstack(args: argparse.Namespace) -> int:
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


def cmd_up(args: argparse.Namespace) -> int:
    from testbed.network.topology import build_topology
    from testbed.providers.local.capabilities import probe
    from testbed.providers.local.mesh import start_mesh
    from testbed.providers.local.provider import up
    from testbed.spec.loader import load_layout

    if args.testbed == "openstack":
        return cmd_up_openstack(args)
    if args.testbed != "local":
        raise UserError(
            f"flag --testbed {args.testbed}",
            "only the local and openstack testbeds are brought up (the twin needs nothing)",
            "use --testbed local or --testbed openstack",
        )
    from testbed.spec.layout import refuse_too_big_for_local

    layout = load_layout(Path(args.layout))  # a bad or too big layout: before the probe
    refuse_too_big_for_local(layout, f"flag --layout {args.layout}")
    caps = probe()
    if not caps.local_testbed_ready:
        raise UserError(
            "testbed up",
            f"this machine cannot host the local testbed ({caps})",
            "run as root on Linux with network namespaces and cgroups",
        )
    topology = build_topology(layout)
    routing = "none" if caps.mesh in ("babel", "batman-adv") and args.mesh else "static"
    has_delay = caps.link_delay in ("netem", "nfqueue") and args.delay
    delay = Path(args.layout) if has_delay else None
    state, plan = up(topology, args.id, args.cpu_scale, routing, delay, caps.link_delay)
    line = f"{len(plan.namespaces)} nodes up in {state.up_seconds:.2f} s"
    if routing == "none":
        _, seconds = start_mesh(plan, state, topology, caps.mesh)
        line += f", {state.mesh} mesh converged in {seconds:.1f} s"
    print(
        f"{args.id}: {line}; CPU scale {state.cpu_scale:.3f}; "
        f"link delay: {state.link_delay} (kernel offers {caps.link_delay}); "
        f"`testbed down --id {args.id}` removes it"
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if args.testbed == "openstack":
        from testbed.providers.openstack.provider import down as down_openstack

        spec, _, cloud = spec_from_args(args)
        removed_by_kind, left = down_openstack(spec.testbed_id, cloud)
        gone = ", ".join(f"{n} {k}" for k, n in removed_by_kind.items() if n) or "nothing"
        print(f"{spec.testbed_id} on {cloud}: removed {gone}; remaining: {sum(left.values())}")
        return 0 if sum(left.values()) == 0 else 1
    from testbed.providers.local.provider import down, leftovers

    removed = down(args.id)
    left = leftovers(args.id)
    remaining = len(left["namespaces"]) + len(left.get("cgroups", [])) + int(left["state_file"])
    print(f"{args.id}: removed {removed}; remaining: {remaining}")
    return 0 if remaining == 0 else 1


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
    up_.add_argument("--testbed", default="local")
    up_.add_argument("--layout", default=str(EXPERIMENTS_DIR / "layouts" / "paper.yaml"))
    up_.add_argument("--id", default="los", help="testbed id (names its namespaces)")
    up_.add_argument(
        "--cpu-scale",
        type=_number(float, 0.001, 1, "--cpu-scale 0.5"),
        help="node quota = vCPUs x 1000 m x this",
    )
    up_.add_argument(
        "--no-mesh",
        dest="mesh",
        action="store_false",
        help="static routes instead of the mesh routing daemon",
    )
    up_.add_argument(
        "--no-delay",
        dest="delay",
        action="store_false",
        help="no link delays (the drift timeline is not applied)",
    )
    cloud_flags(up_)
    up_.add_argument("--image", help="openstack: the image (overrides the spec's image)")
    up_.add_argument(
        "--dry-run", action="store_true", help="openstack: pre-flight and print the plan only"
    )
    up_.set_defaults(func=cmd_up)

    down_ = sub.add_parser("down", help="remove a testbed, also after a crash")
    down_.add_argument("--testbed", default="local")
    down_.add_argument("--id", default="los")
    cloud_flags(down_)
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
