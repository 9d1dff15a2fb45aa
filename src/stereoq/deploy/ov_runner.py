"""Run a compiled stereoq OpenVINO artifact with numpy and openvino only.

This file is copied into every ``openvino`` artifact as ``run_stereo.py``: the deployed model
runs in a process that has neither torch nor stereoq. Usage::

    python run_stereo.py ARTIFACT_DIR predict input.npy disparity.npy   # (1, 6, H, W) float32
    python run_stereo.py ARTIFACT_DIR bench --runs 20 --warmup 3 --threads 2 [--profile 3]

The input is the pair in the training input format (see ``metadata.json``); ``predict`` writes
the disparity in pixels, (1, 1, H, W) float32. ``bench`` prints one JSON line of timings.
``openvino.json`` holds the precision OpenVINO computes non-integer layers in (``f32`` keeps
the model's float arithmetic; ``bf16`` is OpenVINO's own default on CPUs that have it).
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
import openvino as ov

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "openvino.json"
DEVICE = "CPU"


# resize_bilinear, postprocess and max_rss_mib are the ONNX Runtime runner's
# (stereoq.deploy.ort_runner), repeated because each runner is one file with no stereoq import;
# tests/deploy/test_openvino.py holds the two copies equal.
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


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ``VmHWM``, else getrusage)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def compile_properties(
    inference_precision: str, threads: int | None, profile: bool = False
) -> dict[str, object]:
    """One stream (batch 1, latency), ``threads`` inference threads (None: all cores), the
    precision of non-integer layers, and OpenVINO's per-layer counters when profiling."""
    props: dict[str, object] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": inference_precision,
    }
    if threads:
        props["INFERENCE_NUM_THREADS"] = threads
    if profile:
        props["PERF_COUNT"] = True
    return props


def read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class StereoRunner:
    """A compiled artifact folder (``model.xml``/``.bin`` + ``metadata.json``) as a disparity
    predictor."""

    def __init__(
        self, artifact_dir: str | Path, threads: int | None = None, profile: bool = False
    ) -> None:
        folder = Path(artifact_dir)
        self.metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        self.config = read_config(folder)
        self.threads = threads
        self.precision = self.config.get("inference_precision", "f32")
        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(str(folder / MODEL_FILE)),
            DEVICE,
            compile_properties(self.precision, threads, profile),
        )
        self.request = self.compiled.create_infer_request()
        self.input_name = self.metadata["input_name"]
        self.output_names = [o["name"] for o in self.metadata["outputs"]]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    def raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1, 6, H, W) float32 normalised pair -> (disparity_half, offset), normalised."""
        results = self.request.infer({self.input_name: np.ascontiguousarray(x, np.float32)})
        # the request reuses its output buffers on the next call: copy them out
        half, offset = (np.array(results[name]) for name in self.output_names)
        return half, offset

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(1, 6, H, W) float32 normalised pair -> (1, 1, H, W) disparity in pixels."""
        return postprocess(*self.raw(x), self.metadata["maxdisp"])

    def layer_times(self, runs: int) -> list[dict]:
        """Mean time per run of every executed layer over ``runs`` runs (this runner must be
        built with ``profile=True``), costliest first: OpenVINO's own counters (PERF_COUNT)."""
        x = np.zeros(self.input_shape, dtype=np.float32)
        total_us: dict[str, float] = {}
        kind: dict[str, tuple[str, str]] = {}
        for _ in range(runs):
            self.request.infer({self.input_name: x})
            for info in self.request.profiling_info:
                if info.status != ov.ProfilingInfo.Status.EXECUTED:
                    continue
                us = info.real_time.total_seconds() * 1e6
                total_us[info.node_name] = total_us.get(info.node_name, 0.0) + us
                kind[info.node_name] = (info.node_type, info.exec_type)
        layers = [
            {
                "node": name,
                "op": kind[name][0],
                "exec_type": kind[name][1],
                "ms": us / 1000.0 / max(runs, 1),
            }
            for name, us in total_us.items()
        ]
        return sorted(layers, key=lambda r: -r["ms"])


def benchmark(
    artifact_dir: str | Path, runs: int, warmup: int, threads: int | None, profile_runs: int = 0
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
        "openvino": ov.__version__,
        "inference_precision": runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
    }
    if profile_runs:
        del runner  # measured above; the profiled model is compiled separately
        profiled = StereoRunner(artifact_dir, threads, profile=True)
        profiled.layer_times(1)  # first run: allocations
        result["profile"] = profiled.layer_times(profile_runs)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a compiled stereoq OpenVINO artifact.")
    parser.add_argument("artifact_dir")
    sub = parser.add_subparsers(dest="command", required=True)
    pred = sub.add_parser("predict", help="input.npy (1, 6, H, W) -> disparity.npy (1, 1, H, W)")
    pred.add_argument("input")
    pred.add_argument("output")
    pred.add_argument("--raw", action="store_true", help="save the two graph outputs instead")
    bench = sub.add_parser("bench", help="latency and peak memory, one JSON line on stdout")
    bench.add_argument("--runs", type=int, default=20)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--threads", type=int, default=0, help="0: OpenVINO's default")
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
        result = benchmark(
            args.artifact_dir, args.runs, args.warmup, args.threads or None, args.profile
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
