"""Every reading switch of bench-fidelity's ABLATIONS changes what it names, nothing else.

The switches (testbed/bench/fidelity.py): `los.skip_tried` (which neighbours Algorithm 1
considers), `los.limit_per_node` (which past run the +/-10 % limit rule starts from), the
layout's sine drift `phase_spread` (the drift phases), and the training memory override
(the calibration's models' `memory_mb`). Properties (hypothesis) over random decision
contexts, layouts and overrides, and one check of `fidelity._load` per reading.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.bench import fidelity, fig5_fit
from testbed.errors import UserError
from testbed.los.decisions import Decision, Drop, DropReason, Forward, RunHere, SendTo
from testbed.los.job import JobKey, RunRecord, TrainingJob
from testbed.los.runtime_model import runtime_model_for
from testbed.los.schedulers import DecisionContext, Los
from testbed.los.views import NodeView
from testbed.network.drift import build_drift
from testbed.network.topology import build_topology
from testbed.spec.experiment import LosParams, ResolvedExperiment
from testbed.spec.generate import generate
from testbed.spec.layout import GeneratedLayout, LayoutSpec, SineDrift
from testbed.spec.loader import load_calibration, load_layout

from .conftest import EXPERIMENTS, view, warm_model

LOCAL = "n0"
OTHERS = ("n1", "n2", "n3", "n4", "n5", "n6")
FAR = ("far1", "far2")
"""Nodes a job visited that are no neighbours of the deciding node."""
CYCLE = Drop(DropReason.CYCLE)


@cache
def default_experiment() -> ResolvedExperiment:
    """Experiment B with the paper-scale calibration, as bench-fidelity's default reading
    loads it (`_load` writes nothing for it)."""
    return fidelity._load(EXPERIMENTS, fidelity.DEFAULT, (2, 4), 1, None, Path("/nonexistent"))


# --- decision contexts -------------------------------------------------------------------


def node_view(draw: st.DrawFn, node: str, latency: float) -> NodeView:
    capacity = draw(st.sampled_from([1000.0, 2000.0]))
    free = draw(st.sampled_from([0.0, 30.0, 60.0, 150.0, 400.0, 900.0]))
    return NodeView(
        node=node,
        layer="edge",
        cpu_capacity_m=capacity,
        cpu_free_m=min(free, capacity),
        memory_capacity_mb=1024.0,
        memory_free_mb=draw(st.sampled_from([50.0, 300.0, 900.0])),
        latency_ms=latency,
        bandwidth_mbit=100.0,
    )


@st.composite
def contexts(draw: st.DrawFn, history_on: str | None = None) -> tuple[DecisionContext, int]:
    """A random decision of node n0: its neighbours (some of them, and some far nodes,
    already in the token), a cold or warm runtime model, LOS parameters with both switches
    off, and the seed of its random choices. `history_on`: every past run on that node
    ("local", "neighbour": a random one of those, the local node if it has none; None:
    runs anywhere)."""
    window = draw(st.integers(2, 30))
    params = LosParams(
        max_hops=draw(st.integers(0, 5)),
        history_window=window,
        min_runs_for_fit=min(5, window),
        cold_start_utilisation=draw(st.sampled_from([0.5, 0.85])),
    )
    names = draw(st.lists(st.sampled_from(OTHERS), max_size=len(OTHERS), unique=True))
    latencies = st.sampled_from([0.5, 2.0, 5.0, 20.0, 40.0])
    neighbours = tuple(node_view(draw, n, draw(latencies)) for n in names)
    local = node_view(draw, LOCAL, 0.0)
    visited = draw(st.lists(st.sampled_from(OTHERS + FAR), max_size=4, unique=True))
    token = (*visited, LOCAL)
    if history_on == "local" or (history_on == "neighbour" and not names):
        run_nodes: st.SearchStrategy[str] = st.just(LOCAL)
    elif history_on == "neighbour":
        run_nodes = st.just(draw(st.sampled_from(names)))
    else:
        run_nodes = st.sampled_from((LOCAL, *OTHERS, *FAR))
    model = runtime_model_for(params)
    period = draw(st.sampled_from([120.0, 240.0, 400.0]))
    for _ in range(draw(st.integers(0, 8))):
        model.record(
            RunRecord(
                node=draw(run_nodes),
                limit_m=draw(st.floats(50.0, 1000.0)),
                t_job=draw(st.floats(1.0, 400.0)),
                t_send=0.0,
                t_start=draw(st.floats(0.0, 5.0)),
                t_stop=1.0,
                memory_mb=draw(st.floats(50.0, 400.0)),
                payload_bytes=1e5,
                period_s=period,
            )
        )
    job = TrainingJob(
        key=JobKey("train", "s01", "lstm"),
        source=token[0],
        period_s=period,
        threads=draw(st.integers(1, 2)),
        memory_prior_mb=draw(st.sampled_from([100.0, 300.0])),
        payload_prior_bytes=1e5,
    )
    ctx = DecisionContext(job, model, token, local, neighbours, params, random.Random(0))
    return ctx, draw(st.integers(0, 2**31))


def decide(ctx: DecisionContext, seed: int, **switches: bool) -> Decision:
    """LOS's decision with these switches set, with a fresh random stream of `seed`."""
    params = ctx.params.model_copy(update=switches)
    return Los().decide(dataclasses.replace(ctx, params=params, rng=random.Random(seed)))


# --- los.skip_tried ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(contexts())
def test_skip_tried_only_changes_moves_that_tried_nodes_decided(
    case: tuple[DecisionContext, int],
) -> None:
    """skip_tried is the default reading in a world without the tried neighbours; it
    never runs a job elsewhere than the default would when no neighbour is tried, never
    changes a RunHere (nor its limit), never moves a job to a tried node or drops it as a
    cycle. Where it differs, the default either moved the job to a tried node (a CYCLE
    drop) or chose another untried node of the same kind of move: ranking is relative
    (I_r + I_l are indices among the ranked nodes), so the tried nodes it leaves out can
    reorder the untried ones (see the example test below)."""
    ctx, seed = case
    default = decide(ctx, seed)
    skip = decide(ctx, seed, skip_tried=True)
    untried = tuple(v for v in ctx.neighbours if v.node not in ctx.token)
    assert skip == decide(dataclasses.replace(ctx, neighbours=untried), seed)
    if untried == ctx.neighbours:
        assert skip == default
    if isinstance(default, RunHere) or isinstance(skip, RunHere):
        assert skip == default
    if isinstance(skip, SendTo | Forward):
        assert skip.node not in ctx.token
    assert skip != CYCLE
    if skip != default:
        moved_to_tried = default == CYCLE
        reranked = (
            isinstance(default, SendTo | Forward)
            and type(default) is type(skip)
            and default.node not in ctx.token
        )
        assert moved_to_tried or reranked, (default, skip)


def test_skip_tried_can_rerank_untried_neighbours() -> None:
    """Finding: skip_tried changes more than moves to tried nodes. Tried a1, a2 count in
    the default's I_r + I_l indices and put b first (b: 0 + 2, c: 2 + 1); without them b
    and c tie (1 + 1 each) and c, with the lower latency, wins. Neither is tried."""
    neighbours = (
        view("b", free=900.0, latency=3.0),
        view("a1", free=700.0, latency=4.0),
        view("c", free=500.0, latency=2.0),
        view("a2", free=300.0, latency=1.0),
    )
    job = TrainingJob(JobKey("train", "s01", "lstm"), "a1", 240.0, 1, 200.0, 1e5)
    ctx = DecisionContext(
        job,
        warm_model(),
        ("a1", "a2", LOCAL),
        view(LOCAL, free=0.0, latency=0.0),
        neighbours,
        LosParams(),
        random.Random(0),
    )
    default = decide(ctx, 0)
    skip = decide(ctx, 0, skip_tried=True)
    assert isinstance(default, SendTo) and default.node == "b"
    assert isinstance(skip, SendTo) and skip.node == "c"


# --- los.limit_per_node ------------------------------------------------------------------


def expected_limit(
    last: RunRecord | None, target: NodeView, params: LosParams, job: TrainingJob
) -> float:
    """The optimiser's rule as its docstring states it, from the run it starts from."""
    if last is None:
        limit = min(params.initial_free_share * target.cpu_free_m, params.initial_limit_m)
    else:
        limit = last.limit_m * (1.0 - params.step if last.met_period else 1.0 + params.step)
    ceiling = max(params.min_limit_m, min(target.cpu_free_m, job.max_useful_limit_m))
    return min(max(limit, params.min_limit_m), ceiling)


def without_limit(decision: Decision) -> Decision:
    if isinstance(decision, RunHere | SendTo):
        return dataclasses.replace(decision, limit_m=0.0)
    return decision


def target_view(ctx: DecisionContext, decision: RunHere | SendTo) -> NodeView:
    if isinstance(decision, RunHere):
        return ctx.local
    return next(v for v in ctx.neighbours if v.node == decision.node)


def check_limit_per_node(ctx: DecisionContext, seed: int) -> tuple[Decision, Decision]:
    """limit_per_node changes no decision's kind, node, label or drop reason, only the
    CPU limit of a RunHere / SendTo: the default starts the +/-10 % rule from the job's
    last run, limit_per_node from its last run on the chosen node (the first-run rule if
    none). So the two are equal whenever the job's last run was on the chosen node."""
    default = decide(ctx, seed)
    per_node = decide(ctx, seed, limit_per_node=True)
    assert without_limit(per_node) == without_limit(default)
    if isinstance(default, RunHere | SendTo):
        assert isinstance(per_node, RunHere | SendTo)
        target = target_view(ctx, default)
        last, last_here = ctx.model.last_run(), ctx.model.last_run_on(target.node)
        assert default.limit_m == expected_limit(last, target, ctx.params, ctx.job)
        assert per_node.limit_m == expected_limit(last_here, target, ctx.params, ctx.job)
        if last is None or last_here is last:
            assert per_node == default
    return default, per_node


@settings(max_examples=200, deadline=None)
@given(contexts())
def test_limit_per_node_changes_only_the_limit(case: tuple[DecisionContext, int]) -> None:
    check_limit_per_node(*case)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["local", "neighbour"]).flatmap(lambda on: contexts(history_on=on)))
def test_limit_per_node_with_history_on_one_node(case: tuple[DecisionContext, int]) -> None:
    """Every past run on one node: a decision for that node is the default's exactly."""
    ctx, seed = case
    default, per_node = check_limit_per_node(ctx, seed)
    ran_on = {r.node for r in ctx.model.runs}
    assert len(ran_on) <= 1
    if isinstance(default, RunHere | SendTo) and {target_view(ctx, default).node} >= ran_on:
        assert per_node == default


# --- layout drift phase_spread -----------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> LayoutSpec:
    """The paper's layout or a generated one, with extra random sine / waypoint drifts."""
    if draw(st.booleans()):
        base = default_experiment().layout
    else:
        spec = GeneratedLayout(
            nodes=draw(st.integers(3, 24)),
            mean_degree=draw(st.sampled_from([2.0, 4.0, 6.0])),
            seed=draw(st.integers(0, 2**32 - 1)),
        )
        base = generate(spec, np.random.default_rng(spec.seed))
    raw = base.model_dump(mode="json")
    nodes = [n for layer in base.layers for n in base.layer_nodes(layer.name)]
    for _ in range(draw(st.integers(0, 3))):
        rule: dict[str, Any] = {}
        if draw(st.booleans()):
            rule["layer"] = draw(st.sampled_from([layer.name for layer in base.layers]))
        else:
            rule["nodes"] = draw(st.lists(st.sampled_from(nodes), min_size=1, unique=True))
        base_ms = draw(st.floats(0.0, 50.0))
        if draw(st.booleans()):
            rule["profile"] = {
                "kind": "sine",
                "base_ms": base_ms,
                "amplitude_ms": draw(st.floats(0.0, base_ms)),
                "period_s": draw(st.sampled_from([60.0, 1800.0, 3600.0])),
                "phase_spread": draw(st.booleans()),
            }
        else:
            rule["profile"] = {"kind": "waypoints", "points": [[0.0, base_ms], [600.0, 1.0]]}
        raw["drift"].append(rule)
    return LayoutSpec.model_validate(raw)


def without_phase_spread(layout: LayoutSpec) -> dict[str, Any]:
    raw = layout.model_dump(mode="json")
    for rule in raw["drift"]:
        rule["profile"].pop("phase_spread", None)
    return raw


def selected(layout: LayoutSpec, index: int) -> list[str]:
    rule = layout.drift[index]
    return layout.layer_nodes(rule.layer) if rule.layer is not None else list(rule.nodes or [])


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layouts(), st.floats(0.0, 7200.0))
def test_phase_spread_changes_only_the_drift_phases(
    tmp_path: Path, layout: LayoutSpec, t: float
) -> None:
    """bench-fidelity's rewrite of a layout with phase_spread true and false: the layouts
    differ in that flag only; nodes, links, base latencies and bandwidths are the same;
    the drifting nodes, their profiles and waypoint terms are the same; false gives every
    sine term the same phase (0), true spreads a rule's nodes k * period / n apart."""
    source = tmp_path / "layout.yaml"
    source.write_text(yaml.safe_dump(layout.model_dump(mode="json"), sort_keys=False))
    x = dataclasses.replace(default_experiment(), layout_path=source)
    spread = load_layout(fidelity._layout_with_phase_spread(x, True, tmp_path))
    flat = load_layout(fidelity._layout_with_phase_spread(x, False, tmp_path))
    assert without_phase_spread(spread) == without_phase_spread(flat)
    assert without_phase_spread(spread) == without_phase_spread(layout)
    topology = build_topology(layout)
    assert build_topology(spread) == topology
    assert build_topology(flat) == topology
    spread_drift, flat_drift = build_drift(spread, topology), build_drift(flat, topology)
    assert spread_drift.terms.keys() == flat_drift.terms.keys()
    expected: dict[str, list[float | None]] = {}  # per node, per rule that selects it
    for i, rule in enumerate(spread.drift):
        chosen = selected(spread, i)
        for k, node in enumerate(chosen):
            sine = rule.profile if isinstance(rule.profile, SineDrift) else None
            phase = None if sine is None else k * sine.period_s / len(chosen)
            expected.setdefault(node, []).append(phase)
    for node, spread_terms in spread_drift.terms.items():
        flat_terms = flat_drift.terms[node]
        assert len(spread_terms) == len(flat_terms) == len(expected[node])
        for a, b, phase in zip(spread_terms, flat_terms, expected[node], strict=True):
            if phase is None:  # waypoints: no phase to spread
                assert a == b
                continue
            assert isinstance(a.profile, SineDrift) and isinstance(b.profile, SineDrift)
            assert a.profile.model_copy(update={"phase_spread": False}) == b.profile
            assert b.phase_s == 0.0
            assert a.phase_s == pytest.approx(phase)
    for link in topology.links:  # base latency kept; the drift adds the same as before
        assert flat_drift.link_latency_ms(link, t) - link.latency_ms == pytest.approx(
            flat_drift.node_delay_ms(link.a, t) + flat_drift.node_delay_ms(link.b, t)
        )


# --- training memory override ------------------------------------------------------------


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        st.sampled_from(["lstm", "autoencoder", "no-such-model"]),
        st.floats(0.0, 1e6, allow_nan=False),
    )
)
def test_memory_override_changes_only_the_models_memory(
    tmp_path: Path, memory: dict[str, float]
) -> None:
    """`_calibration_with_memory` sets each named model's memory_mb to (value, std 0) and
    keeps every other field of every model and of the calibration, except its name,
    which it marks `-memory-set` (a label: run metadata and headers show it). A name that
    is no model is refused (the reading would change nothing but the name)."""
    x = default_experiment()
    old = x.calibration
    assert x.calibration_path.name == "paper-scale.yaml"
    if "no-such-model" in memory:
        with pytest.raises(UserError, match="no-such-model"):
            fidelity._calibration_with_memory(x, memory, tmp_path)
        return
    new = load_calibration(fidelity._calibration_with_memory(x, memory, tmp_path))
    assert new.models.keys() == old.models.keys()
    for name, model in old.models.items():
        changed = new.models[name]
        if name in memory:
            assert changed.memory_mb.model_dump() == {"mean": memory[name], "std": 0.0}
        else:
            assert changed.memory_mb == model.memory_mb
        assert changed.model_dump(exclude={"memory_mb"}) == model.model_dump(exclude={"memory_mb"})
    assert new.model_dump(exclude={"models", "name"}) == old.model_dump(exclude={"models", "name"})
    assert new.name == f"{old.name}-memory-set"


# --- the readings as bench-fidelity loads them -------------------------------------------


def sine_phase_spread(layout: LayoutSpec, value: bool) -> dict[str, Any]:
    raw = layout.model_dump(mode="json")
    for rule in raw["drift"]:
        if rule["profile"]["kind"] == "sine":
            rule["profile"]["phase_spread"] = value
    return raw


def expected_memory(x: ResolvedExperiment, memory: Mapping[str, float]) -> dict[str, Any]:
    raw = x.calibration.model_dump(mode="json")
    for name, mb in memory.items():
        raw["models"][name]["memory_mb"] = {"mean": mb, "std": 0.0}
    raw["name"] += "-memory-set"
    return raw


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fig. 5 fit's calibration, as bench-fidelity's default reading uses it."""
    base = EXPERIMENTS / fidelity.CALIBRATION
    return fig5_fit.scaled_calibration(base, 2.0, tmp_path_factory.mktemp("fit"))


@pytest.mark.parametrize("reading", fidelity.ABLATIONS, ids=lambda r: r.slug)
def test_each_reading_loads_the_default_experiment_but_what_it_names(
    reading: fidelity.Reading, tmp_path: Path, fitted: Path
) -> None:
    """Each ablation's experiment is the default's with only its switch changed (and,
    for the layout and calibration readings, the spec's path to the rewritten file)."""
    default = fidelity._load(EXPERIMENTS, fidelity.DEFAULT, (2, 4), 1, None, tmp_path, fitted)
    x = fidelity._load(EXPERIMENTS, reading, (2, 4), 1, None, tmp_path, fitted)
    files = {"los", "layout", "calibration"}
    assert x.spec.model_dump(exclude=files) == default.spec.model_dump(exclude=files)
    assert x.spec.los.model_dump() == {**default.spec.los.model_dump(), **reading.los}
    if reading.phase_spread is None:
        assert x.spec.layout == default.spec.layout
        assert x.layout == default.layout
    else:
        assert x.layout.model_dump(mode="json") == sine_phase_spread(
            default.layout, reading.phase_spread
        )
    if not reading.work_fitted:  # the calibration as written, not the fit's
        assert x.calibration == load_calibration(EXPERIMENTS / fidelity.CALIBRATION)
        assert default.calibration == load_calibration(fitted)
    elif reading.training_memory_mb is None:
        assert x.spec.calibration == default.spec.calibration
        assert x.calibration == default.calibration
    else:
        assert x.calibration.model_dump(mode="json") == expected_memory(
            default, reading.training_memory_mb
        )
    changed = (
        bool(reading.los),
        reading.phase_spread is not None,
        reading.training_memory_mb is not None,
        not reading.work_fitted,
    )
    assert sum(changed) == 1, "one switch per reading"
