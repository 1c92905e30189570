from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

from testbed.datasets.citypulse_files import default_data_dir
from testbed.los.job import JobKey, RunRecord, TrainingJob
from testbed.los.runtime_model import RuntimeModel
from testbed.los.views import NodeView
from testbed.spec.experiment import LosParams

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def paper_with_edge_drift(path: Path, points: list[list[float]]) -> Path:
    """The paper layout, its edge layer's drift replaced by waypoints [t_s, ms], at `path`."""
    text = (EXPERIMENTS / "layouts" / "paper.yaml").read_text()
    drift = f"drift:\n  - layer: edge\n    profile: {{kind: waypoints, points: {points}}}\n"
    path.write_text(text[: text.index("drift:")] + drift)
    return path


# --- prerequisites: skipped where missing, failed where CI requires them -----------------
REQUIRE = {
    "local-testbed": "LOS_REQUIRE_LOCAL_TESTBED",
    "citypulse": "LOS_REQUIRE_CITYPULSE",
    "openstack-box": "LOS_REQUIRE_OPENSTACK_BOX",
    "guests": "LOS_REQUIRE_GUESTS",
}
"""Each prerequisite and the variable that, set to 1, makes its absence a failure."""


def required(what: str) -> bool:
    return os.environ.get(REQUIRE[what]) == "1"


def skip_or_fail(what: str, reason: str) -> NoReturn:
    """Skip the test for a missing prerequisite, or fail it with the same reason where
    the prerequisite is required (`LOS_REQUIRE_...=1`, as CI sets)."""
    if required(what):
        pytest.fail(f"{reason} ({REQUIRE[what]}=1: required here)", pytrace=False)
    pytest.skip(reason)


def prerequisite(what: str, missing: bool, reason: str) -> pytest.MarkDecorator:
    """A `skipif` for prerequisites: skips when `missing`, or fails where required."""
    return pytest.mark.prerequisite(what=what, missing=missing, reason=reason)


def pytest_configure(config: pytest.Config) -> None:
    # runs in tests never read a user's fetched CityPulse cache (`testbed data fetch`):
    # they read the sample (LOS_CITYPULSE_DIR / ../shared) or synthetic data, as in CI
    if "LOS_DATA_DIR" not in os.environ:
        empty = tempfile.mkdtemp(prefix="los-empty-data-cache-")
        os.environ["LOS_DATA_DIR"] = empty
        atexit.register(shutil.rmtree, empty, True)
    config.addinivalue_line(
        "markers",
        "prerequisite(what, missing, reason): skip if missing; fail if LOS_REQUIRE_... is 1",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("prerequisite"):
        if mark.kwargs["missing"]:
            skip_or_fail(mark.kwargs["what"], mark.kwargs["reason"])


def view(
    node: str,
    free: float = 1000.0,
    capacity: float = 1000.0,
    latency: float = 5.0,
    memory_free: float = 1000.0,
    layer: str = "edge",
) -> NodeView:
    return NodeView(
        node=node,
        layer=layer,
        cpu_capacity_m=capacity,
        cpu_free_m=free,
        memory_capacity_mb=1024.0,
        memory_free_mb=memory_free,
        latency_ms=latency,
        bandwidth_mbit=100.0,
    )


def job(source: str = "a", period: float = 240.0, memory: float = 200.0) -> TrainingJob:
    return TrainingJob(
        key=JobKey("train", "s01", "lstm"),
        source=source,
        period_s=period,
        memory_prior_mb=memory,
        payload_prior_bytes=100_000.0,
    )


def warm_model(work_cpu_s: float = 18.0, runs: int = 6, node: str = "x") -> RuntimeModel:
    """A model with history from a CPU-bound job: t_job = work / (limit / 1000)."""
    model = RuntimeModel()
    for i in range(runs):
        limit = 400.0 * 0.9**i
        model.record(
            RunRecord(
                node=node,
                limit_m=limit,
                t_job=work_cpu_s * 1000 / limit,
                t_send=0.0,
                t_start=4.0,
                t_stop=1.0,
                memory_mb=180.0,
                payload_bytes=100_000.0,
                period_s=240.0,
            )
        )
    return model


@pytest.fixture
def params() -> LosParams:
    return LosParams()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(7)


# beside the clone, as in CI (a clean clone with the shared folder at ../shared)
CITYPULSE = default_data_dir(REPO)  # LOS_CITYPULSE_DIR, else ../shared/data/citypulse


@pytest.fixture
def citypulse() -> Path:
    if not CITYPULSE.is_dir():
        skip_or_fail(
            "citypulse", f"CityPulse sample not found at {CITYPULSE} (set LOS_CITYPULSE_DIR)"
        )
    return CITYPULSE


@pytest.fixture
def cpu_parent():  # type: ignore[no-untyped-def]
    """A parent cgroup for the test's jobs, removed afterwards."""
    from testbed.jobs.cgroups import CgroupUnavailable, CpuGroup, detect

    try:
        hierarchy = detect()
    except CgroupUnavailable as exc:
        skip_or_fail("local-testbed", str(exc))
    group = CpuGroup(hierarchy, f"los-testbed-test-{os.getpid()}").create()
    group.set_limit_m(1000)
    yield group
    group.remove()
