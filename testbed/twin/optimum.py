"""The offline optimum of a cell: the most training jobs any scheduler could execute.

It sees the cell as the twin makes it: the same streams, trigger times, job sizes (the
twin draws them per stream and tick, `testbed.twin.draws.draw_job`, whatever happens to
the trigger), node capacities, routes and link latencies, and solves an integer linear
programme with `scipy.optimize.milp` (HiGHS): x[j, n] = 1 when trigger j runs on node n,
maximise the number of executed triggers; a second solve then picks, among schedules
executing that many, one with few hops (placement only: the bound is the first solve's).

Constraints, each one a necessary condition of every run the twin executes, whatever
scheduler placed it (so the ILP is a relaxation of the twin and its optimum an upper
bound on what any scheduler executes on the same arrivals):

1. **One node per trigger**, among the nodes within `los.max_hops` hops of the source
   (fewest-hop distance: the placement loop never moves a job more often) whose free
   memory (memory minus the job launcher's and the prediction jobs') holds the run, and
   (while the timeplan changes no background `load`) whose CPU after its prediction jobs
   is at least `los.min_limit_m`: every scheduler's feasibility check needs that much
   free in its view, and prediction load is in every view from time 0. The `local`
   scheduler of experiment A skips that check, so the bound does not cover it.
2. **Previous run must finish** (per stream): a run of trigger j on n cannot end before
   t_j + d_min(j, n), where d_min = t_send with the lowest drift of every link on the
   route (the twin's send time can only be longer: drift up, `degrade`, later retries)
   + start, overhead and stop wall time + its CPU work at the most CPU it can get,
   min(threads x 1000 m, node capacity). A later trigger of the stream that fires before
   that is dropped (`previous-running`), so x[j, n] + executed(j') <= 1.
3. **CPU capacity over time** (interval form): if trigger j and the stream's next trigger
   j+ both execute, j's run did all its CPU work inside [t_j, t_j+] (otherwise j+ would
   have been dropped). The CPU a node serves in a time window is at most its capacity x
   the window (fair sharing never serves more, whatever the limits), so for every window
   w of a dyadic family (lengths min period x 2^k, two offsets) the work of the runs
   forced inside w is at most capacity x |w|: sum of work x z[j, n] <= C_n |w|, with
   z[j, n] >= x[j, n] + executed(j+) - 1.
4. **Memory over time**: a run holds its memory from its arrival until it ends, and the
   twin rejects a job that does not fit (`target-rejected`). A run of j on n surely holds
   it during [t_j + a_max, t_j + d_min(j, n)), where a_max bounds the arrival: the longest
   LOS+ retry wait (`los.plus.retry_window_share` x period), plus max_hops x the largest
   link latency (highest drift plus the largest `degrade` of the timeplan) for deciding,
   plus the send time at those latencies. At the start of every such interval the memory
   of the runs that surely hold memory then must fit the node's free memory.
5. `iterations` (if set) caps the executed runs per stream.

Relaxations (why it is an upper bound, and how loose): it ignores everything that only
loses jobs (stale views, cycles, the feasibility rule's time check, nodes leaving, agent
outages, CPU limits slowing runs below their best speed, prediction jobs' CPU); deciding
and relaying latency count as zero in (2) and (3); CPU windows only bind runs whose next
trigger also executes; and every trigger of a live stream node counts. Under these it
tells how far a scheduler is from what the modelled capacity allows, not what a real
scheduler could reach.

When HiGHS stops at the time limit without proving optimality, the result says so: its
best schedule is not a bound, and only its dual bound (`bound`) is.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from testbed.cells.outcome import CellOutcome
from testbed.cells.rows import TriggerRow, dropped, placed, trigger_head
from testbed.network.drift import DriftTimeline
from testbed.network.topology import Topology
from testbed.results.optimum_cells import NOT_PROVEN, UNPROVEN_WHY
from testbed.spec.experiment import ExperimentSpec, TimeplanEvent
from testbed.spec.layout import SineDrift
from testbed.twin.cell import TwinCell
from testbed.twin.draws import draw_job, tick_times

NOT_SELECTED = "not-in-optimum"


@dataclass(frozen=True, slots=True)
class OfflineTrigger:
    stream: str
    trigger: int
    """The n-th trigger of its stream (1-based), as in the twin's rows."""
    time_s: float
    period_s: float
    source: str
    data: str
    model: str
    cpu_m_s: float
    """Start, training and stop CPU work, millicore-seconds."""
    wall_s: float
    """Start, overhead and stop wall time, seconds."""
    memory_mb: float
    threads: int
    next: int | None
    """Index of the stream's next trigger, if any."""


@dataclass(frozen=True, slots=True)
class Candidate:
    trigger: int
    node: str
    route: tuple[str, ...]
    min_duration_s: float
    """The run cannot end sooner than this after its trigger."""
    hold_from_s: float
    """From this offset after its trigger until `min_duration_s` it surely holds memory."""


@dataclass(frozen=True)
class OfflineProblem:
    triggers: list[OfflineTrigger]
    candidates: list[Candidate]
    capacity_m: dict[str, float]
    memory_free_mb: dict[str, float]
    iterations: int | None


@dataclass(frozen=True)
class OptimumResult:
    status: str
    """optimal, time-limit, or what HiGHS said."""
    proven: bool
    executed: int
    """Executed triggers in the best schedule found (the optimum when proven)."""
    bound: int
    """A proven upper bound on executed triggers (equal to `executed` when proven)."""
    chosen: dict[int, Candidate] = field(default_factory=dict)
    solve_s: float = 0.0
    variables: int = 0
    constraints: int = 0


# --- the problem, from a twin cell ----------------------------------------------------
def _drift_range(drift: DriftTimeline, node: str) -> tuple[float, float]:
    lo = hi = 0.0
    for term in drift.terms.get(node, ()):
        p = term.profile
        if isinstance(p, SineDrift):
            lo, hi = lo + p.base_ms - p.amplitude_ms, hi + p.base_ms + p.amplitude_ms
        else:
            values = [v for _, v in p.points]
            lo, hi = lo + min(values), hi + max(values)
    return lo, hi


def _alive_at(spec: ExperimentSpec, node: str, layer: str, t: float) -> bool:
    """Whether a node is in the mesh at t per the timeplan (a change at t itself counts
    as either, so the trigger is kept: the bound may only grow)."""
    alive = True
    events: Iterable[TimeplanEvent] = sorted(spec.timeplan, key=lambda e: e.at_s)
    for event in events:
        if event.action not in ("leave", "join") or event.at_s > t:
            continue
        if event.node != node and event.layer != layer:
            continue
        if event.at_s == t:
            return True
        alive = event.action == "join"
    return alive


def build_problem(cell: TwinCell) -> OfflineProblem:
    spec = cell.spec
    topo: Topology = cell.topology
    los = spec.los
    max_degrade = max(
        (e.delay_ms or 0.0 for e in spec.timeplan if e.action == "degrade"), default=0
    )
    ranges = {name: _drift_range(cell.drift, name) for name in topo.nodes}
    link_max = max(
        (link.latency_ms + ranges[link.a][1] + ranges[link.b][1] for link in topo.links),
        default=0.0,
    )
    link_max += max_degrade
    capacity = {name: node.spec.cpu_capacity_m for name, node in cell.nodes.items()}
    memory_free = {name: node.availability().memory_free_mb for name, node in cell.nodes.items()}
    base_free = dict(capacity)
    for state in cell.streams:  # the prediction jobs, as `run` adds them
        memory_free[state.stream.node] -= spec.prediction.memory_mb
        base_free[state.stream.node] -= spec.prediction.cpu_m
    # admission: every scheduler but `local` needs los.min_limit_m free in its view of a
    # node; prediction load is known from time 0, so while the timeplan changes no load,
    # no view ever shows a node with less than that after prediction load as feasible
    static_load = not any(e.action == "load" for e in spec.timeplan)
    admitted = {n for n in topo.nodes if not static_load or base_free[n] >= los.min_limit_m}
    samples = spec.streams.samples_per_training
    triggers: list[OfflineTrigger] = []
    candidates: list[Candidate] = []
    for state in cell.streams:
        stream, cost = state.stream, state.cost
        rng = np.random.default_rng(cell.size_seeds[stream.id])
        layer = topo.layer_of(stream.node)
        first_index = len(triggers)
        for t in tick_times(stream, spec.duration_s):
            draw = draw_job(rng, cost)
            if not _alive_at(spec, stream.node, layer, t):
                continue
            triggers.append(
                OfflineTrigger(
                    stream=stream.id,
                    trigger=len(triggers) - first_index + 1,
                    time_s=t,
                    period_s=stream.period_s,
                    source=stream.node,
                    data=stream.data,
                    model=stream.model,
                    cpu_m_s=draw.work_m_s + 1000.0 * (cost.start_cpu_s + cost.stop_cpu_s),
                    wall_s=draw.start_s + cost.overhead_s + draw.stop_s,
                    memory_mb=draw.memory_mb,
                    threads=cost.threads,
                    next=None,
                )
            )
        for k in range(first_index, len(triggers) - 1):
            triggers[k] = _with_next(triggers[k], k + 1)
        payload = float(cost.model_bytes + samples * cost.sample_bytes)
        retry_max = los.plus.retry_window_share * stream.period_s
        for node in sorted(admitted):
            route = cell.route(stream.node, node)
            if len(route) - 1 > los.max_hops:
                continue
            if node == stream.node:
                send_lo = send_hi = 0.0
            else:
                pairs = list(itertools.pairwise(route))
                base = sum(topo.link(a, b).latency_ms for a, b in pairs)
                lo = base + sum(ranges[a][0] + ranges[b][0] for a, b in pairs)
                hi = base + sum(ranges[a][1] + ranges[b][1] for a, b in pairs)
                hi += max_degrade * len(pairs)
                bandwidth = min(topo.link(a, b).bandwidth_mbit for a, b in pairs)
                transfer = payload * 8.0 / (bandwidth * 1e6)
                handover = cell.x.calibration.handover_s
                if handover is not None:  # as the twin's cells send (run-derived)
                    transfer += handover.fixed_s + handover.per_hop_s * (len(pairs) - 1)
                send_lo, send_hi = lo / 1000.0 + transfer, hi / 1000.0 + transfer
            rate = min(1000.0 * cost.threads, capacity[node])
            arrive_max = retry_max + los.max_hops * link_max / 1000.0 + send_hi
            for k in range(first_index, len(triggers)):
                trig = triggers[k]
                if trig.memory_mb > memory_free[node]:
                    continue
                duration = send_lo + trig.wall_s + trig.cpu_m_s / rate
                candidates.append(Candidate(k, node, route, duration, arrive_max))
    candidates.sort(key=lambda c: (c.trigger, c.node))
    return OfflineProblem(triggers, candidates, capacity, memory_free, spec.iterations)


def _with_next(t: OfflineTrigger, nxt: int) -> OfflineTrigger:
    return OfflineTrigger(
        t.stream,
        t.trigger,
        t.time_s,
        t.period_s,
        t.source,
        t.data,
        t.model,
        t.cpu_m_s,
        t.wall_s,
        t.memory_mb,
        t.threads,
        nxt,
    )


# --- the ILP ----------------------------------------------------------------------------
class _Rows:
    """Sparse constraint rows lo <= A v <= hi, built one row at a time."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, entries: Iterable[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(self.lo)
        for col, value in entries:
            self.r.append(row)
            self.c.append(col)
            self.v.append(value)
        self.lo.append(lo)
        self.hi.append(hi)

    def __len__(self) -> int:
        return len(self.lo)


def solve(
    problem: OfflineProblem, time_limit_s: float = 60.0, prefer_fewer_hops: bool = True
) -> OptimumResult:
    trig, cand = problem.triggers, problem.candidates
    n_x = len(cand)
    if not trig:
        return OptimumResult("optimal", True, 0, 0)
    if n_x == 0:
        return OptimumResult("optimal", True, 0, 0)
    of_trigger: dict[int, list[int]] = defaultdict(list)
    for k, c in enumerate(cand):
        of_trigger[c.trigger].append(k)
    z_of: dict[int, int] = {}
    for k, c in enumerate(cand):
        if trig[c.trigger].next is not None:
            z_of[k] = n_x + len(z_of)
    n = n_x + len(z_of)
    rows = _Rows()
    inf = math.inf
    # 1. one node per trigger
    for ks in of_trigger.values():
        rows.add(((k, 1.0) for k in ks), -inf, 1.0)
    # 2. previous run must finish
    by_stream: dict[str, list[int]] = defaultdict(list)
    for j, t in enumerate(trig):
        by_stream[t.stream].append(j)
    for k, c in enumerate(cand):
        t = trig[c.trigger]
        j2 = t.next
        while j2 is not None and trig[j2].time_s < t.time_s + c.min_duration_s:
            rows.add([(k, 1.0), *((k2, 1.0) for k2 in of_trigger.get(j2, []))], -inf, 1.0)
            j2 = trig[j2].next
    # 3. z >= x + executed(next) - 1, and CPU per window
    for k, zk in z_of.items():
        nxt = trig[cand[k].trigger].next
        assert nxt is not None
        entries = [(zk, 1.0), (k, -1.0), *((k2, -1.0) for k2 in of_trigger.get(nxt, []))]
        rows.add(entries, -1.0, inf)
    _cpu_windows(problem, z_of, rows)
    # 4. memory
    _memory_points(problem, rows)
    # 5. iterations
    if problem.iterations is not None:
        for js in by_stream.values():
            ks = [k for j in js for k in of_trigger.get(j, [])]
            if len(js) > problem.iterations:
                rows.add(((k, 1.0) for k in ks), -inf, float(problem.iterations))
    integrality = np.zeros(n)
    integrality[:n_x] = 1
    bounds = Bounds(np.zeros(n), np.ones(n))
    matrix = coo_array((rows.v, (rows.r, rows.c)), shape=(max(len(rows), 1), n)).tocsr()
    lo, hi = np.array(rows.lo or [-inf]), np.array(rows.hi or [inf])
    # phase 1: the most executed jobs, proven (exact gap)
    count = np.zeros(n)
    count[:n_x] = -1.0
    t0 = time.perf_counter()
    res = milp(
        count,
        constraints=[LinearConstraint(matrix, lo, hi)],
        integrality=integrality,
        bounds=bounds,
        options={"time_limit": time_limit_s, "mip_rel_gap": 0.0, "disp": False},
    )
    proven = bool(res.status == 0)
    status = "optimal" if proven else ("time-limit" if res.status == 1 else str(res.message))
    x = res.x
    dual = getattr(res, "mip_dual_bound", None)
    best = round(-float(res.fun)) if x is not None else 0
    # phase 2 (placement only, not part of the bound): as many jobs, fewest hops
    left = time_limit_s - (time.perf_counter() - t0)
    if prefer_fewer_hops and x is not None and best > 0 and left > 1.0:
        hops = np.zeros(n)
        hops[:n_x] = [len(c.route) - 1 for c in cand]
        keep = LinearConstraint(count.reshape(1, -1), -inf, -best)
        second = milp(
            hops,
            constraints=[LinearConstraint(matrix, lo, hi), keep],
            integrality=integrality,
            bounds=bounds,
            options={"time_limit": min(left, 2.0), "disp": False},
        )
        if second.x is not None:
            x = second.x
    solve_s = time.perf_counter() - t0
    chosen: dict[int, Candidate] = {}
    if x is not None:
        for k in range(n_x):
            if x[k] > 0.5:
                chosen[cand[k].trigger] = cand[k]
    executed = len(chosen)
    if proven:
        bound = executed
    elif dual is not None and math.isfinite(dual):
        bound = min(len(trig), math.floor(-dual + 1e-6))
    else:
        bound = len(trig)
    return OptimumResult(status, proven, executed, bound, chosen, solve_s, n, len(rows))


def _cpu_windows(problem: OfflineProblem, z_of: dict[int, int], rows: _Rows) -> None:
    trig, cand = problem.triggers, problem.candidates
    if not z_of:
        return
    spans = []
    for k in z_of:
        t = trig[cand[k].trigger]
        assert t.next is not None
        spans.append((k, t.time_s, trig[t.next].time_s))
    base = min(t1 - t0 for _, t0, t1 in spans)
    end = max(t1 for _, _, t1 in spans)
    by_node: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for k, t0, t1 in spans:
        by_node[cand[k].node].append((k, t0, t1))
    length = base
    while True:
        for offset in (0.0, length / 2):
            for node, items in by_node.items():
                cap = problem.capacity_m[node] * length
                windows: dict[int, list[int]] = defaultdict(list)
                for k, t0, t1 in items:
                    i = math.floor((t0 - offset) / length)
                    if t1 <= offset + (i + 1) * length:
                        windows[i].append(k)
                for ks in windows.values():
                    work = sum(trig[cand[k].trigger].cpu_m_s for k in ks)
                    if work > cap:  # only windows that could bind
                        rows.add(
                            ((z_of[k], trig[cand[k].trigger].cpu_m_s) for k in ks), -math.inf, cap
                        )
        if length > end:
            break
        length *= 2


def _memory_points(problem: OfflineProblem, rows: _Rows) -> None:
    trig = problem.triggers
    by_node: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for k, c in enumerate(problem.candidates):
        t = trig[c.trigger]
        start, stop = t.time_s + c.hold_from_s, t.time_s + c.min_duration_s
        if start < stop:
            by_node[c.node].append((k, start, stop, t.memory_mb))
    for node, items in by_node.items():
        free = problem.memory_free_mb[node]
        seen: set[tuple[int, ...]] = set()
        for _, point, _, _ in items:
            ks = tuple(k for k, a, b, _ in items if a <= point < b)
            if ks in seen:
                continue
            seen.add(ks)
            if sum(m for k, a, b, m in items if k in ks) > free:
                mem = {k: m for k, _, _, m in items}
                rows.add(((k, mem[k]) for k in ks), -math.inf, free)


# --- a cell of the sweep ----------------------------------------------------------------
def run_optimum_cell(cell: TwinCell, time_limit_s: float) -> CellOutcome:
    """The optimum as a cell: one row per trigger, executed where the ILP put it."""
    problem = build_problem(cell)
    result = solve(problem, time_limit_s)
    # an unproven cell's schedule is only the best found: its rows say so, so that no
    # drop rate or share is read off it (`testbed.results.optimum_cells`)
    why = "optimum" if result.proven else UNPROVEN_WHY
    not_run = NOT_SELECTED if result.proven else NOT_PROVEN
    rows: list[TriggerRow] = []
    iteration: dict[str, int] = defaultdict(int)
    streams = {state.stream.id: state.stream for state in cell.streams}
    for j, t in enumerate(problem.triggers):
        row = trigger_head(cell.cell, streams[t.stream], t.time_s, t.trigger)
        chosen = result.chosen.get(j)
        if chosen is None:
            rows.append(dropped(row, not_run, (t.source,)))
        else:
            iteration[t.stream] += 1
            layer = cell.topology.layer_of(chosen.node)
            rows.append(placed(row, chosen.route, layer, iteration[t.stream], why))
    event = {
        "sim_time": 0.0,
        "kind": "optimum",
        "status": result.status,
        "proven": result.proven,
        "executed": result.executed,
        "bound": result.bound,
        "triggers": len(problem.triggers),
        "variables": result.variables,
        "constraints": result.constraints,
        "solve_s": round(result.solve_s, 3),
        "time_limit_s": time_limit_s,
    }
    return CellOutcome(rows, [event], cell.spec.duration_s, [s.stream for s in cell.streams])
