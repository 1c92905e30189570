from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.twin.cpu import FairShareCpu


def test_a_capped_job_runs_at_its_limit() -> None:
    cpu = FairShareCpu(1000)
    cpu.add(0, 1, cap_m=400, work_m_s=18_000)  # 18 CPU-seconds at 0.4 cores
    assert cpu.next_completion() == pytest.approx(45.0)


def test_contention_slows_jobs_down_fairly() -> None:
    cpu = FairShareCpu(1000)
    cpu.add(0, 1, cap_m=500)  # steady prediction load
    cpu.add(0, 2, cap_m=500)
    cpu.add(0, 3, cap_m=400, work_m_s=10_000)
    assert cpu.rate_of(3) == pytest.approx(1000 / 3)
    cpu.remove(10, 1)
    assert cpu.rate_of(3) == pytest.approx(400)
    # 10 s at 333 m, then the rest at 400 m
    assert cpu.next_completion() == pytest.approx(10 + (10_000 - 10_000 / 3) / 400)
    assert cpu.finished(40) == [3]


@given(
    st.floats(100, 4000),
    st.lists(st.floats(1, 2000), min_size=1, max_size=12),
)
def test_shares_respect_caps_and_capacity(capacity: float, caps: list[float]) -> None:
    cpu = FairShareCpu(capacity)
    for i, cap in enumerate(caps):
        cpu.add(0, i, cap_m=cap, work_m_s=math.inf if i % 2 else 1e6)
    rates = [cpu.rate_of(i) for i in range(len(caps))]
    assert all(r <= c + 1e-6 for r, c in zip(rates, caps, strict=True))
    assert sum(rates) <= capacity + 1e-6
    assert sum(rates) == pytest.approx(min(capacity, sum(caps)), rel=1e-9)
