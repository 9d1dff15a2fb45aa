"""Run a compiled stereoq ONNX Runtime artifact with numpy and onnxruntime only.

This file is copied into every ``ort`` artifact as ``run_stereo.py``: the deployed model runs in
a process that has neither torch nor stereoq. Usage::

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
import onnxruntime as ort

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, height, width), bilinear with half-pixel centres.

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``.
    """

    def axis(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
        i1 = np.minimum(i0 + 1, in_size - 1)
        frac = (src - i0).astype(np.float32)
        return i0, i1, frac

    y0, y1, fy = axis(height, x.shape[-2])
    x0, x1, fx = axis(width, x.shape[-1])
    top = x[..., y0, :] * (1 - fy)[:, None] + x[..., y1, :] * fy[:, None]
    return (top[..., x0] * (1 - fx) + top[..., x1] * fx).astype(np.float32)


def postprocess(disparity_half: np.ndarray, offset: np.ndarray, maxdisp: float) -> np.ndarray:
    """Deployed outputs (N, 1, H/2, W/2), (N, 1, H, W), normalised -> disparity (N, 1, H, W) px."""
    up = resize_bilinear(disparity_half, offset.shape[-2], offset.shape[-1])
    return np.maximum(up + offset, 0.0) * np.float32(maxdisp)


def session_options(threads: int | None, profile_prefix: str | None = None) -> ort.SessionOptions:
    """All of ONNX Runtime's graph optimizations (QDQ fusion, layout), quiet logging, and
    worker threads that sleep instead of spinning between operators.

    Spinning (ORT's default) burns the time slices the working threads need whenever the CPU
    is shared: on a 2-core machine under load ~6, StereoNet at 256x512 on 2 threads took
    918 -> 770 ms (int8) and 1759 -> 1563 ms (float) with spinning off.
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


class StereoRunner:
    """A compiled artifact folder (``model.onnx`` + ``metadata.json``) as a disparity predictor."""

    def __init__(self, artifact_dir: str | Path, threads: int | None = None) -> None:
        folder = Path(artifact_dir)
        self.model_path = folder / MODEL_FILE
        self.metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        self.threads = threads
        self.session = ort.InferenceSession(
            str(self.model_path), session_options(threads), providers=["CPUExecutionProvider"]
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, 6, H, W) float32 normalised pair -> (disparity_half, offset), normalised."""
        feeds = {self.metadata["input_name"]: np.ascontiguousarray(x, dtype=np.float32)}
        half, offset = self.session.run(None, feeds)
        return half, offset

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(1, 6, H, W) float32 normalised pair -> (1, 1, H, W) disparity in pixels."""
        return postprocess(*self.raw(x), self.metadata["maxdisp"])

    def profile(self, runs: int, prefix: str) -> str:
        """Run ``runs`` times with ONNX Runtime's profiler on; returns the trace file's path."""
        session = ort.InferenceSession(
            str(self.model_path), session_options(self.threads, prefix),
            providers=["CPUExecutionProvider"],
        )
        x = np.zeros(self.input_shape, dtype=np.float32)
        for _ in range(runs):
            session.run(None, {self.metadata["input_name"]: x})
        return session.end_profiling()


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux: ``VmHWM`` from /proc/self/status (``ru_maxrss`` would carry the parent's peak over
    fork + exec); elsewhere ``getrusage`` (macOS reports bytes, others KiB).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def benchmark(
    artifact_dir: str | Path,
    runs: int,
    warmup: int,
    threads: int | None,
    profile_runs: int = 0,
    profile_prefix: str = "profile",
) -> dict:
    """Latency of ``runs`` timed runs after ``warmup`` untimed ones, and peak memory."""
    rss_before = max_rss_mib()
    rng = np.random.default_rng(0)
    runner = StereoRunner(artifact_dir, threads)
    x = rng.standard_normal(runner.input_shape).astype(np.float32).clip(-1, 1)
    for _ in range(warmup):
        runner.predict(x)
    times_ms = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.predict(x)
        times_ms.append((time.perf_counter() - start) * 1000)
    rss_after = max_rss_mib()
    result = {
        "runs": runs,
        "warmup": warmup,
        "threads": threads or os.cpu_count(),
        "latency_ms": times_ms,
        "median_ms": statistics.median(times_ms),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "peak_rss_mib": rss_after,
        "rss_before_session_mib": rss_before,
        "onnxruntime": ort.__version__,
    }
    if profile_runs:
        result["profile"] = runner.profile(profile_runs, profile_prefix)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a compiled stereoq ONNX Runtime artifact.")
    parser.add_argument("artifact_dir")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="input.npy (1, 6, H, W) -> disparity.npy (1, 1, H, W)")
    pred.add_argument("input")
    pred.add_argument("output")
    pred.add_argument("--raw", action="store_true", help="save the two graph outputs instead")
    bench = sub.add_parser("bench", help="latency and peak memory, one JSON line on stdout")
    bench.add_argument("--runs", type=int, default=20)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    bench.add_argument("--profile", type=int, default=0, help="profiled runs after timing")
    bench.add_argument("--profile-prefix", default="profile", help="where the trace goes")
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
        result = benchmark(
            args.artifact_dir,
            args.runs,
            args.warmup,
            args.threads or None,
            args.profile,
            args.profile_prefix,
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
