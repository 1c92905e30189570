"""IFTM anomaly detectors in PyTorch (CPU): identity function + threshold model.

* traffic: an LSTM that forecasts the next sample of (avgMeasuredTime, avgSpeed,
  vehicleCount) from the previous `window` samples;
* pollution: a dense autoencoder 5-16-3-16-5 that reconstructs the five pollutants.

The identity-function error is the Euclidean distance between the sample and its
forecast or reconstruction, on features scaled with the mean and spread of the training
window. A sample is anomalous when its error exceeds the threshold model's
mean + k * std (cumulative or exponential moving average, see `thresholds`).
"""

from __future__ import annotations

import io
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from testbed.workload.thresholds import (
    Threshold,
    ThresholdKind,
    make_threshold,
    threshold_from_dict,
    threshold_to_dict,
)

ModelKind = Literal["lstm", "autoencoder"]
FEATURE_COUNT: dict[str, int] = {"lstm": 3, "autoencoder": 5}


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    window: int = 10
    hidden: int = 32
    layers: int = 2
    threshold: ThresholdKind = "welford"
    k: float = 3.0
    alpha: float = 0.01
    threads: int = 1
    seed: int = 0


class LstmForecaster(nn.Module):
    def __init__(self, features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])  # type: ignore[no-any-return]


class DenseAutoencoder(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, 16),
            nn.Tanh(),
            nn.Linear(16, 3),
            nn.Tanh(),
            nn.Linear(3, 16),
            nn.Tanh(),
            nn.Linear(16, features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def build_net(kind: str, config: TrainingConfig) -> nn.Module:
    if kind == "lstm":
        return LstmForecaster(FEATURE_COUNT[kind], config.hidden, config.layers)
    if kind == "autoencoder":
        return DenseAutoencoder(FEATURE_COUNT[kind])
    raise ValueError(f"unknown model kind '{kind}' (lstm or autoencoder)")


@dataclass
class TrainStats:
    epochs: int
    samples: int
    seconds: float
    cpu_seconds: float
    final_loss: float


@dataclass(frozen=True)
class PendingScore:
    """One sample's model input and target, ready for the forward pass."""

    inputs: np.ndarray
    target: np.ndarray


@dataclass
class Detector:
    kind: str
    config: TrainingConfig
    mean: np.ndarray
    std: np.ndarray
    net: nn.Module
    threshold: Threshold
    _window: deque[np.ndarray] = field(default_factory=deque, repr=False)

    # --- scoring ------------------------------------------------------------------
    def scale(self, samples: np.ndarray) -> np.ndarray:
        return ((np.asarray(samples, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def _pairs(self, scaled: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the identity function for a scaled series."""
        if self.kind == "lstm":
            w = self.config.window
            windows = np.lib.stride_tricks.sliding_window_view(scaled[:-1], (w, scaled.shape[1]))
            inputs = windows.reshape(-1, w, scaled.shape[1])
            return torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(scaled[w:])
        tensor = torch.from_numpy(scaled)
        return tensor, tensor

    def errors(self, samples: np.ndarray) -> np.ndarray:
        """Error of every sample; the LSTM's first `window` samples have none (NaN)."""
        scaled = self.scale(samples)
        inputs, targets = self._pairs(scaled)
        with torch.no_grad():
            out = self.net(inputs)
        err = torch.linalg.vector_norm(out - targets, dim=1).numpy()
        if self.kind == "lstm":
            return np.concatenate([np.full(self.config.window, np.nan), err])
        return err

    def score(self, sample: np.ndarray) -> float | None:
        """Online scoring for a stream: the sample's error, or None while warming up."""
        pending = self.observe(sample)
        return None if pending is None else self.error_of(pending)

    def observe(self, sample: np.ndarray) -> PendingScore | None:
        """The cheap half of `score`, for every sample of a stream in order: scales it and
        moves the LSTM's window on. What the forward pass needs (`error_of`), or None
        while the LSTM's window is still filling."""
        x = self.scale(np.asarray(sample, dtype=np.float32)[None, :])[0]
        if self.kind == "autoencoder":
            return PendingScore(x[None, :], x)
        window = self._window
        pending = None
        if len(window) == self.config.window:
            pending = PendingScore(np.stack(window)[None, :, :], x)
        window.append(x)
        if len(window) > self.config.window:
            window.popleft()
        return pending

    def error_of(self, pending: PendingScore) -> float:
        """The costly half of `score`: the net's forward pass and the error."""
        with torch.no_grad():
            out = self.net(torch.from_numpy(pending.inputs))[0]
        return float(torch.linalg.vector_norm(out - torch.from_numpy(pending.target)))

    def detect(self, samples: np.ndarray, update: bool = True) -> np.ndarray:
        """Flag every sample; the threshold model learns from the errors as it goes."""
        flags = np.zeros(len(samples), dtype=bool)
        for i, error in enumerate(self.errors(samples)):
            if np.isnan(error):
                continue
            flags[i] = self.threshold.is_anomaly(float(error))
            if update and not flags[i]:
                self.threshold.update(float(error))
        return flags

    # --- storage ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "kind": self.kind,
                "config": asdict(self.config),
                "mean": self.mean.tolist(),
                "std": self.std.tolist(),
                "state_dict": self.net.state_dict(),
                "threshold": threshold_to_dict(self.threshold),
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        blob: dict[str, Any] = torch.load(io.BytesIO(data), weights_only=True)
        config = TrainingConfig(**blob["config"])
        net = build_net(blob["kind"], config)
        net.load_state_dict(blob["state_dict"])
        net.eval()
        return cls(
            kind=blob["kind"],
            config=config,
            mean=np.asarray(blob["mean"], dtype=np.float32),
            std=np.asarray(blob["std"], dtype=np.float32),
            net=net,
            threshold=threshold_from_dict(blob["threshold"]),
        )


def train(
    kind: str,
    samples: np.ndarray,
    config: TrainingConfig,
    previous: Detector | None = None,
) -> tuple[Detector, TrainStats]:
    """Fit the scaler on `samples`, (re)train the net from `previous` if given, and
    initialise the threshold model from the training errors."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2 or samples.shape[1] != FEATURE_COUNT[kind]:
        raise ValueError(
            f"{kind} expects samples of {FEATURE_COUNT[kind]} features, got shape {samples.shape}"
        )
    minimum = config.window + 2 if kind == "lstm" else 2
    if len(samples) < minimum:
        raise ValueError(f"{kind} needs at least {minimum} samples, got {len(samples)}")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    mean = samples.mean(axis=0)
    std = np.maximum(samples.std(axis=0), 1e-3)
    net = build_net(kind, config)
    if previous is not None and previous.kind == kind:
        net.load_state_dict(previous.net.state_dict())
    detector = Detector(
        kind, config, mean, std, net, make_threshold(config.threshold, config.k, config.alpha)
    )
    inputs, targets = detector._pairs(detector.scale(samples))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    loss_fn = nn.MSELoss()
    generator = torch.Generator().manual_seed(config.seed)
    loss_value = float("nan")
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(net(inputs[batch]), targets[batch])
            loss.backward()
            optimiser.step()
            loss_value = loss.item()
    net.eval()
    for error in detector.errors(samples):
        if not np.isnan(error):
            detector.threshold.update(float(error))
    stats = TrainStats(
        epochs=config.epochs,
        samples=len(samples),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        final_loss=loss_value,
    )
    return detector, stats
