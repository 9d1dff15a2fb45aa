"""Data benchmark: synthetic rendering, `pack` throughput, DataLoader reads (LMDB vs raw files).

Rendering is timed per generator (``data.synthetic.kind``) at the quick start's 192x384, at
256x512 and at 540x960, as wall milliseconds and as samples/s per core (1 / CPU time per pair,
OpenCV single-threaded: a DataLoader worker or a pack process renders on one core).

Generates a SceneFlow-format tree of 960x540 frames (PNG + PFM + list file), packs it with 1 and 2
workers, and reads it through the DataLoader with the training pipeline (RandomCrop 256x512,
YUV444, normalise) from the LMDB and from the raw files. Bytes per sample are compared with the
reference layout (the same PNG images plus raw float32 disparity).

    python bench/bench_data.py                 # 48 frames, results in bench/results/data.json
    python bench/bench_data.py --samples 16 --workdir /tmp/stereoq-bench
    python bench/bench_data.py --render-only   # only the generators' rendering speed
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
from torch.utils.data import DataLoader

from stereoq.cli.output import print_table, write_json
from stereoq.data import sceneflow
from stereoq.data.datasets import LmdbStereo, SceneFlowStereo
from stereoq.data.generators import GENERATORS, Renderer
from stereoq.data.pack import SceneFlowSource, pack
from stereoq.data.synthetic import split_scenes
from stereoq.data.transforms import build_transform
from stereoq.settings.data import DataConfig

# (height, width, max_disp, repeats)
RENDER_SIZES = ((192, 384, 64.0, 20), (256, 512, 96.0, 12), (540, 960, 192.0, 5))


def render_ms(render_pair: Renderer, height: int, width: int, max_disp: float,
              repeats: int) -> tuple[float, float]:
    """Median wall-clock and mean CPU milliseconds for one synthetic pair (CPU time is the
    steadier figure on a shared machine)."""
    render_pair(0, 0, height, width, max_disp)
    times = []
    cpu_start = time.process_time()
    for i in range(repeats):
        start = time.perf_counter()
        render_pair(0, i + 1, height, width, max_disp)
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / repeats
    return 1000 * statistics.median(times), 1000 * cpu


def read_rate(dataset, num_workers: int, epochs: int) -> float:
    """Samples per second through a DataLoader (batch 1), after one warm-up sample."""
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=num_workers,
                        persistent_workers=num_workers > 0)
    next(iter(loader))
    start = time.perf_counter()
    count = 0
    for _ in range(epochs):
        for batch in loader:
            count += batch["left"].shape[0]
    return count / (time.perf_counter() - start)


def print_render(results: dict) -> None:
    print_table(
        "synthetic render per generator (data.synthetic.kind), one pair",
        ["generator", "size", "wall ms (median)", "CPU ms (mean)", "samples/s per core"],
        [(kind, size, wall, cpu, 1000.0 / cpu)
         for kind, sizes in results["render_ms"].items()
         for size, (wall, cpu) in sizes.items()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=48, help="960x540 frames to generate")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--json", type=Path, default=Path("bench/results/data.json"))
    parser.add_argument("--epochs", type=int, default=2, help="read passes per measurement")
    parser.add_argument("--render-only", action="store_true",
                        help="time the generators only (no tree, pack or reads)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stereoq-bench-"))
    results: dict = {"samples": args.samples, "frame": "540x960",
                     "load_average_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    try:
        results["render_ms"] = {
            kind: {f"{h}x{w}": render_ms(render, h, w, d, n) for h, w, d, n in RENDER_SIZES}
            for kind, render in GENERATORS.items()
        }
        results["load_average_after_render"] = os.getloadavg()[0]
        if args.render_only:
            print_render(results)
            print(f"saved {write_json(args.json, results)}")
            return
        start = time.perf_counter()
        root = sceneflow.write_tree(work / "SceneFlow", {
            split: split_scenes(split, count, 540, 960, 192.0)
            for split, count in (("train", args.samples), ("test", 1))
        })
        results["tree_seconds"] = time.perf_counter() - start
        list_file = sceneflow.list_path(root, "train")
        source = SceneFlowSource(root, tuple(sceneflow.load_entries(root, "train")), list_file)

        packs = {}
        for workers, codec in ((1, "png16"), (2, "png16"), (2, "float32")):
            out = work / f"lmdb_{workers}_{codec}"
            report = pack(source, out, "train", num_workers=workers, disp_encoding=codec)
            packs[f"{workers}w_{codec}"] = {
                "workers": workers, "codec": codec,
                "samples_per_s": report.samples / report.seconds,
                "mb_per_s": report.stored_bytes / 1e6 / report.seconds,
                "bytes_per_sample": report.bytes_per_sample,
                "disp_bytes_per_sample": report.disp_bytes / report.samples,
                "reference_bytes_per_sample": report.reference_bytes_per_sample,
                "raw_disp_bytes_per_sample": report.raw_disp_bytes / report.samples,
                "path": str(report.path),
            }
        results["pack"] = packs

        cfg = DataConfig(source="lmdb", train_crop=(256, 512))
        transform = build_transform(cfg, crop=True)
        lmdb_path = Path(packs["2w_png16"]["path"])
        reads = {}
        for workers in (0, 2):
            reads[f"lmdb_{workers}w"] = read_rate(LmdbStereo(lmdb_path, transform), workers,
                                                  args.epochs)
            reads[f"raw_{workers}w"] = read_rate(SceneFlowStereo(root, "train", transform),
                                                 workers, args.epochs)
        results["read_samples_per_s"] = reads
        results["load_average_end"] = os.getloadavg()[0]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"load average {results['load_average_start']:.1f} at start, "
          f"{results['load_average_end']:.1f} at end, on {results['cpus']} CPUs")
    print_render(results)
    print_table(
        f"pack {args.samples} SceneFlow-format 960x540 samples (includes worker start-up)",
        ["run", "samples/s", "MB/s", "bytes/sample", "disp bytes/sample",
         "ref. bytes/sample (raw f32 disp)", "raw f32 disp bytes"],
        [(k, v["samples_per_s"], v["mb_per_s"], round(v["bytes_per_sample"]),
          round(v["disp_bytes_per_sample"]), round(v["reference_bytes_per_sample"]),
          round(v["raw_disp_bytes_per_sample"])) for k, v in packs.items()],
    )
    print_table(
        "DataLoader read, batch 1, crop 256x512 + YUV444 + normalise (samples/s)",
        ["source", "0 workers", "2 workers"],
        [(src, reads[f"{src}_0w"], reads[f"{src}_2w"]) for src in ("lmdb", "raw")],
    )
    for value in packs.values():
        value.pop("path")
    print(f"saved {write_json(args.json, results)}")


if __name__ == "__main__":
    main()
