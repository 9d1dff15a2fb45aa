"""Training benchmark: samples/s and forward / backward / optimizer time per step.

Runs the configured model's training step (the five outputs, the masked multi-scale loss, Adam
with weight decay on weights) on random inputs at 256x512 crops with the configured float batch
size, so the figure measures the network, not data loading (bench_data.py measures that). The
synthetic data pipeline's own rate at the configured crop is reported alongside. The machine may
be shared: medians over the timed steps, and the spread, are both printed.

    python bench/bench_train.py                          # embedded default config
    python bench/bench_train.py --config stereonet_sceneflow --steps 3 --batch-size 2
    python bench/bench_train.py --height 128 --width 256 --threads 2 [--baseline]

The model is prepared as the float stage trains it (NHWC convolution weights, glibc malloc kept
from returning freed activations to the kernel); ``--baseline`` measures the step without both,
in a fresh process, for comparison. Minor page faults per step are reported: thousands mean
activations are mapped in afresh every step.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from stereoq.cli.output import print_table, write_json
from stereoq.engine.allocator import keep_freed_memory
from stereoq.engine.layout import channels_last
from stereoq.engine.optim import build_optimizer
from stereoq.models.build import build_loss, build_model
from stereoq.settings import load_config


def step_times(
    cfg, batch: int, height: int, width: int, steps: int, warmup: int, baseline: bool = False
) -> dict:
    """Median seconds of forward, backward and optimizer step over ``steps`` timed steps."""
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    if not baseline:
        keep_freed_memory()
        channels_last(model)
    loss_fn = build_loss(cfg.model)
    optimizer = build_optimizer(model, cfg.stages.float_.optimizer)
    x = torch.randn(batch, 6, height, width)
    gt = torch.rand(batch, 1, height, width) * (cfg.model.maxdisp - 2) + 1
    rows: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "step": []}
    faults = 0
    for i in range(warmup + steps):
        if i == warmup:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        loss = loss_fn(model(x), gt)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i >= warmup:
            for key, value in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                rows[key].append(value)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    times = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
             for k, v in rows.items()}
    return {**times, "page_faults_per_step": faults}


def data_rate(cfg, samples: int) -> float:
    """Training samples per second from the configured data pipeline (one process)."""
    from stereoq.data import build_dataset

    dataset = build_dataset(cfg.data, "train", crop=True)
    dataset[0]
    start = time.perf_counter()
    for i in range(1, samples + 1):
        dataset[i % len(dataset)]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config path or shipped name")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--baseline", action="store_true",
                        help="contiguous conv weights and glibc's default malloc trimming")
    parser.add_argument("--json", type=Path, default=Path("bench/results/train.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    batch = args.batch_size or cfg.stages.float_.batch_size
    times = step_times(cfg, batch, args.height, args.width, args.steps, args.warmup,
                       args.baseline)
    faults = times.pop("page_faults_per_step")
    step = times["step"]["median_s"]
    data = data_rate(cfg, 16)
    result = {
        "config": cfg.name,
        "crop": [args.height, args.width],
        "batch_size": batch,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "baseline": args.baseline,
        "page_faults_per_step": faults,
        "times": times,
        "samples_per_s": batch / step,
        "data_samples_per_s": data,
        "data_crop": cfg.data.train_crop,
    }
    rows = [(k, 1000 * v["median_s"], 1000 * v["min_s"], 1000 * v["max_s"])
            for k, v in times.items()]
    print_table(
        f"{cfg.name}: training step at {args.height}x{args.width}, batch {batch}, "
        f"{result['threads']} threads ({args.steps} steps"
        f"{', baseline' if args.baseline else ''}; {faults:.0f} page faults/step)",
        ["phase", "median ms", "min ms", "max ms"],
        rows,
    )
    print_table("throughput", ["what", "samples/s"], [
        ("model (forward + backward + Adam)", result["samples_per_s"]),
        (f"data pipeline ({cfg.data.source}, crop {cfg.data.train_crop})", data),
    ])
    print(f"saved {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
