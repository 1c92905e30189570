"""Benchmark of the local testbed: bring-up and teardown, mesh convergence, agent start,
scheduling decision latency (p50/p99) and per-hop forwarding overhead, measured in the
running testbed with the paper's layout. Prints numbers; asserts nothing about time.

The edge layer is declared full (as with two prediction jobs per edge node), so every
training job is forwarded: through the edge layer to the gateway and on to the fog.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from testbed.jobs import auth
from testbed.jobs.auth import new_secret
from testbed.jobs.trigger import samples_bytes
from testbed.network.topology import build_topology
from testbed.providers.local.agents import agent_configs, start_agents
from testbed.providers.local.mesh import entered, start_mesh
from testbed.providers.local.provider import STATE_DIR, down, up
from testbed.spec.loader import load_layout


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _events(testbed_id: str) -> list[dict[str, Any]]:
    events = []
    for path in (STATE_DIR / testbed_id / "agents").glob("*/events.jsonl"):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return events


def run_local_bench(layout: Path, triggers: int = 30) -> int:
    topology = build_topology(load_layout(layout))
    testbed_id = "bench-local"
    with contextlib.suppress(RuntimeError):
        down(testbed_id)
    t0 = time.perf_counter()
    state, plan = up(topology, testbed_id, routing="none")
    up_s = time.perf_counter() - t0
    try:
        _, converge_s = start_mesh(plan, state, topology)
        secret = new_secret()
        edge = [n for n, s in topology.nodes.items() if s.layer == "edge"]
        full = {n: {"prediction_m": topology.nodes[n].cpu_capacity_m} for n in edge}
        configs = agent_configs(
            plan,
            topology,
            state,
            secret,
            state.mesh,  # babel here; batman-adv where start_mesh picked it
            overrides=full,
            common={"training": {"epochs": 1}, "gossip_interval_s": 1.0},
        )
        t1 = time.perf_counter()
        start_agents(plan, state, configs)
        agents_s = time.perf_counter() - t1
        time.sleep(3)  # a few gossip rounds
        source = edge[0]
        body = samples_bytes(np.random.default_rng(0).normal(size=(100, 3)).astype("float32"))
        for k in range(triggers):
            meta = json.dumps({"stream": f"b{k:03d}", "kind": "lstm", "period_s": 240})
            headers = {
                **auth.sign(bytes.fromhex(secret), "POST", "/trigger", body),
                "X-Trigger": meta,
            }
            request = urllib.request.Request(
                f"http://{plan.address_of(source)}:7070/trigger",
                data=body,
                method="POST",
                headers=headers,
            )
            with entered(plan.namespaces[source]):
                urllib.request.urlopen(request, timeout=10).read()
            time.sleep(0.2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            reports = [e for e in _events(testbed_id) if e["kind"] == "report"]
            if len(reports) >= triggers:
                break
            time.sleep(1)
        events = _events(testbed_id)
    finally:
        t2 = time.perf_counter()
        down(testbed_id)
        down_s = time.perf_counter() - t2
    decided = [e for e in events if e["kind"] == "decided"]
    latency_ms = [1000 * e["seconds"] for e in decided]
    by_trigger: dict[str, list[dict[str, Any]]] = {}
    for e in decided:
        by_trigger.setdefault(e["trigger"], []).append(e)
    hop_ms = []
    for chain in by_trigger.values():
        chain.sort(key=lambda e: len(e["token"]))
        hop_ms += [1000 * (b["at"] - a["at"]) for a, b in itertools.pairwise(chain)]
    reports = [e for e in events if e["kind"] == "report" and e["node"] == source]
    outcomes = statistics.multimode([r["outcome"] for r in reports]) if reports else []
    hops = [len(r["path"]) - 1 for r in reports if r["outcome"] == "executed"]
    print(
        f"local testbed, {len(topology.nodes)} nodes ({layout.name}), CPU scale "
        f"{state.cpu_scale:.3f}"
    )
    print(
        f"  up {up_s:.2f} s, babel converged {converge_s:.1f} s, {len(configs)} agents "
        f"started {agents_s:.1f} s, down {down_s:.2f} s"
    )
    print(
        f"  decisions: {len(latency_ms)}, latency p50 {_percentile(latency_ms, 50):.2f} ms, "
        f"p99 {_percentile(latency_ms, 99):.2f} ms (LOS core inside the agent)"
    )
    print(
        f"  forwarding overhead per hop: p50 {_percentile(hop_ms, 50):.1f} ms, p99 "
        f"{_percentile(hop_ms, 99):.1f} ms over {len(hop_ms)} hops (signed HTTP between "
        f"namespaces, no link delay)"
    )
    print(
        f"  {len(reports)}/{triggers} jobs reported, mostly {outcomes}; executed at hop "
        f"depths {sorted(set(hops))}"
    )
    return 0
