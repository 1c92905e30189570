"""`testbed up` and `testbed down` on the local provider: their flags, bringing the layout up
in network namespaces (mesh, link delays, CPU limits) and removing it, also after a crash."""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.errors import UserError
from testbed.flags import number


def lifecycle_flags(command: str, parser: argparse.ArgumentParser) -> None:
    """`up`: --cpu-scale, --no-mesh, --no-delay; `down` needs only the CLI's --id."""
    if command != "up":
        return
    parser.add_argument(
        "--cpu-scale",
        type=number(float, 0.001, 1, "--cpu-scale 0.5"),
        help="node quota = vCPUs x 1000 m x this",
    )
    parser.add_argument(
        "--no-mesh",
        dest="mesh",
        action="store_false",
        help="static routes instead of the mesh routing daemon",
    )
    parser.add_argument(
        "--no-delay",
        dest="delay",
        action="store_false",
        help="no link delays (the drift timeline is not applied)",
    )


def cli_up(args: argparse.Namespace) -> int:
    from testbed.network.topology import build_topology
    from testbed.providers.local.capabilities import probe
    from testbed.providers.local.mesh import start_mesh
    from testbed.providers.local.provider import up
    from testbed.spec.layout import refuse_too_big_for_local
    from testbed.spec.loader import load_layout

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


def cli_down(args: argparse.Namespace) -> int:
    from testbed.providers.local.provider import down, leftovers

    removed = down(args.id)
    left = leftovers(args.id)
    remaining = len(left["namespaces"]) + len(left.get("cgroups", [])) + int(left["state_file"])
    print(f"{args.id}: removed {removed}; remaining: {remaining}")
    return 0 if remaining == 0 else 1
