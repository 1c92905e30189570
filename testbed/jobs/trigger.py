"""The payload of a training trigger: the cached samples as `.npy` bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def samples_bytes(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
