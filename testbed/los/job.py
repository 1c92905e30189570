"""Training jobs and the records of their runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class JobKey:
    """Identifies a periodic training job: job name, stream id and model id."""

    job: str
    stream: str
    model: str

    def __str__(self) -> str:
        return f"{self.job}/{self.stream}/{self.model}"


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """One trigger of a periodic training job, as the prediction job hands it over."""

    key: JobKey
    source: str
    period_s: float
    threads: int = 1
    memory_prior_mb: float = 0.0
    payload_prior_bytes: float = 0.0

    @property
    def max_useful_limit_m(self) -> float:
        """A job with T threads cannot use more than T cores."""
        return 1000.0 * self.threads


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What one finished run of a job measured."""

    node: str
    limit_m: float
    t_job: float
    t_send: float
    t_start: float
    t_stop: float
    memory_mb: float
    payload_bytes: float
    period_s: float

    @property
    def t_complete(self) -> float:
        return self.t_job + self.t_send + self.t_start + self.t_stop

    @property
    def met_period(self) -> bool:
        return self.t_complete <= self.period_s

    @property
    def relative_residual(self) -> float:
        """|t_complete - t_period| relative to the period."""
        return abs(self.t_complete - self.period_s) / self.period_s
