"""Run a compiled stereoq AOTInductor artifact with torch (and numpy) only.

This file is copied into every ``inductor`` artifact as ``run_stereo.py``: the deployed model
runs in a process without stereoq (the package holds the compiled kernels and the weights; torch
provides the runtime and oneDNN). Usage::

    python run_stereo.py ARTIFACT_DIR predict input.npy disparity.npy   # (1, 6, H, W) float32
    python run_stereo.py ARTIFACT_DIR bench --runs 20 --warmup 3 --threads 2 [--profile 3]

The input is the pair in the training input format (see ``metadata.json``); ``predict`` writes
the disparity in pixels, (1, 1, H, W) float32. ``bench`` prints one JSON line of timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PACKAGE_FILE = "model.pt2"
METADATA_FILE = "metadata.json"


def postprocess(disparity_half: torch.Tensor, offset: torch.Tensor, maxdisp: float) -> torch.Tensor:
    """Deployed outputs (N, 1, H/2, W/2), (N, 1, H, W), normalised -> disparity (N, 1, H, W) px."""
    up = F.interpolate(disparity_half, size=offset.shape[-2:], mode="bilinear",
                       align_corners=False)
    return torch.relu(up + offset) * maxdisp


class StereoRunner:
    """A compiled artifact folder (``model.pt2`` + ``metadata.json``) as a disparity predictor."""

    def __init__(self, artifact_dir: str | Path, threads: int | None = None) -> None:
        folder = Path(artifact_dir)
        self.metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        if threads:
            torch.set_num_threads(threads)
        self.model = torch._inductor.aoti_load_package(str(folder / PACKAGE_FILE))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, 6, H, W) float32 normalised pair -> (disparity_half, offset), normalised."""
        half, offset = self.raw_torch(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        return half.numpy(), offset.numpy()

    def raw_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"input shape {tuple(x.shape)}, the artifact takes {self.input_shape}")
        with torch.no_grad():
            half, offset = self.model(x)
        return half, offset

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(1, 6, H, W) float32 normalised pair -> (1, 1, H, W) disparity in pixels."""
        half, offset = self.raw_torch(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        return postprocess(half, offset, self.metadata["maxdisp"]).numpy()

    def profile(self, runs: int) -> list[dict]:
        """Self CPU time per op over ``runs`` runs (torch profiler), ms per run, costliest first.

        oneDNN convolutions show as their own ops; inductor's generated (fused elementwise)
        kernels are not itemised and appear as the compiled graph's own time.
        """
        from torch.profiler import ProfilerActivity, profile

        x = torch.zeros(self.input_shape)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                self.raw_torch(x)
        rows = []
        for event in prof.key_averages():
            ms = event.self_cpu_time_total / 1000.0 / runs
            if ms > 0:
                rows.append({"op": event.key, "calls": event.count // runs, "ms": ms})
        return sorted(rows, key=lambda r: -r["ms"])


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux VmHWM, else getrusage)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def benchmark(artifact_dir: str | Path, runs: int, warmup: int, threads: int | None,
              profile_runs: int = 0) -> dict:
    """Latency of ``runs`` timed runs after ``warmup`` untimed ones, and peak memory."""
    rss_before = max_rss_mib()
    runner = StereoRunner(artifact_dir, threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(runner.input_shape).astype(np.float32).clip(-1, 1)
    for _ in range(warmup):
        runner.predict(x)
    times_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.predict(x)
        times_ms.append((time.perf_counter() - start) * 1000)
    result = {
        "runs": runs,
        "warmup": warmup,
        "threads": threads or torch.get_num_threads() or os.cpu_count(),
        "latency_ms": times_ms,
        "median_ms": statistics.median(times_ms),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "peak_rss_mib": max_rss_mib(),
        "rss_before_session_mib": rss_before,
        "torch": torch.__version__,
    }
    if profile_runs:
        result["profile"] = runner.profile(profile_runs)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a compiled stereoq AOTInductor artifact.")
    parser.add_argument("artifact_dir")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="input.npy (1, 6, H, W) -> disparity.npy (1, 1, H, W)")
    pred.add_argument("input")
    pred.add_argument("output")
    pred.add_argument("--raw", action="store_true", help="save the two graph outputs instead")
    bench = sub.add_parser("bench", help="latency and peak memory, one JSON line on stdout")
    bench.add_argument("--runs", type=int, default=20)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--threads", type=int, default=0, help="0: torch's default")
    bench.add_argument("--profile", type=int, default=0, help="profiled runs after timing")
    args = parser.parse_args(argv)
    if args.command == "predict":
        runner = StereoRunner(args.artifact_dir)
        x = np.load(args.input)
        if args.raw:
            half, offset = runner.raw(x)
            np.savez(args.output, disparity_half=half, offset=offset)
        else:
            np.save(args.output, runner.predict(x))
    else:
        print(json.dumps(benchmark(args.artifact_dir, args.runs, args.warmup,
                                   args.threads or None, args.profile)))


if __name__ == "__main__":
    main()
