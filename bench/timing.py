"""Latency of a PyTorch callable, shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch


def time_torch(fn: Callable[[torch.Tensor], object], x: torch.Tensor, runs: int,
               warmup: int) -> dict:
    """Median and p90 wall time in ms of ``fn(x)`` over ``runs`` calls after ``warmup``."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "runs": runs, "warmup": warmup}
