"""Training benchmark: samples/s and forward / backward / optimizer time per step.

Runs the configured model's training step (the five outputs, the masked multi-scale loss, Adam
with weight decay on weights) on random inputs at 256x512 crops with the configured float batch
size, so the figure measures the network, not data loading (bench_data.py measures that). The
synthetic data pipeline's own rate at the configured crop is reported alongside. The machine may
be shared: medians over the timed steps, and the spread, are both printed.

    python bench/bench_train.py                          # embedded default config
    python bench/bench_train.py --config stereonet_sceneflow --steps 3 --batch-size 2
    python bench/bench_train.py --height 128 --width 256 --threads 2 [--baseline]
    python bench/bench_train.py --device cuda [--compile] [--precision fp32,bf16,fp16]

The model is prepared as the float stage trains it (NHWC convolution weights, glibc malloc kept
from returning freed activations to the kernel); ``--baseline`` measures the step without both,
in a fresh process, for comparison. Minor page faults per step are reported: thousands mean
activations are mapped in afresh every step.

With ``--precision`` (default on CUDA: fp32 and bf16) each precision, and with ``--compile``
each also through torch.compile, trains as the loop does, fed by the configured data pipeline
(the config's source, crop and ``data`` loader options): samples/s of the whole step and of the
model alone, and the share of step time spent blocked in the DataLoader's iterator, which on a
GPU is time it waits for data (each step ends when the loss is read, as the loop reads it).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from stereoq.cli.common import config_argument
from stereoq.cli.output import print_table, write_json
from stereoq.engine.allocator import keep_freed_memory
from stereoq.engine.evaluate import pair_input
from stereoq.engine.layout import channels_last
from stereoq.engine.loop import loader_options, on_device
from stereoq.engine.optim import build_optimizer
from stereoq.engine.precision import autocast, check_precision, grad_scaler
from stereoq.errors import StereoqError
from stereoq.models.build import build_loss, build_model
from stereoq.settings import load_config


def now(device: torch.device) -> float:
    """perf_counter() once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def step_times(
    cfg, batch: int, height: int, width: int, steps: int, warmup: int, baseline: bool = False,
    device: torch.device = torch.device("cpu"),
) -> dict:
    """Median seconds of forward, backward and optimizer step over ``steps`` timed steps."""
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    if not baseline:
        keep_freed_memory()
        channels_last(model)
    model = model.to(device)
    loss_fn = build_loss(cfg.model)
    optimizer = build_optimizer(model, cfg.stages.float_.optimizer)
    x = torch.randn(batch, 6, height, width, device=device)
    gt = torch.rand(batch, 1, height, width, device=device) * (cfg.model.maxdisp - 2) + 1
    rows: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "step": []}
    faults = 0
    for i in range(warmup + steps):
        if i == warmup:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = now(device)
        loss = loss_fn(model(x), gt)
        t1 = now(device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = now(device)
        optimizer.step()
        t3 = now(device)
        if i >= warmup:
            for key, value in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                rows[key].append(value)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    times = {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
             for k, v in rows.items()}
    return {**times, "page_faults_per_step": faults}


def pipeline_rates(
    cfg, device: torch.device, precision: str, compiled: bool, batch: int, steps: int,
    warmup: int,
) -> dict:
    """Training steps as the loop runs them, fed by the configured data pipeline: samples/s of
    the step and of the model alone, and the share of step time blocked waiting for a batch."""
    from stereoq.data import build_dataset

    torch.manual_seed(0)
    model = channels_last(build_model(cfg.model)).to(device).train()
    forward = torch.compile(model) if compiled else model
    loss_fn = build_loss(cfg.model)
    optimizer = build_optimizer(model, cfg.stages.float_.optimizer)
    scaler = grad_scaler(precision, device)
    dataset = build_dataset(cfg.data, "train", crop=True)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                        **loader_options(cfg.data, device))
    batches = iter(())
    waits, totals = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch_data = next(batches, None)
        if batch_data is None:  # a new epoch: starting workers counts as waiting, as in training
            batches = iter(loader)
            batch_data = next(batches)
        t1 = time.perf_counter()
        batch_data = on_device(batch_data, device)
        with autocast(precision, device):
            loss = loss_fn(forward(pair_input(batch_data)), batch_data["disp"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss.item()  # the loop reads every step's loss: the GPU has finished the step here
        t2 = now(device)
        if i >= warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
    step = statistics.median(totals)
    return {
        "precision": precision,
        "compile": compiled,
        "samples_per_s": batch / step,
        "model_samples_per_s": batch / statistics.median(t - w for t, w in zip(totals, waits,
                                                                                strict=True)),
        "data_wait_share": sum(waits) / sum(totals),
        "step_median_s": step,
    }


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
    parser.add_argument("--config", default=None, type=config_argument,
                        help="config path, shipped config or shipped model's name")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--baseline", action="store_true",
                        help="contiguous conv weights and glibc's default malloc trimming")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default=None,
                        help="comma-separated of fp32, bf16, fp16: train from the data pipeline "
                        "in each (default: fp32,bf16 on cuda, none on cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="also each precision through torch.compile")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="KEY.PATH=VALUE config override (as stereoq's --set)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/train.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    precisions = (args.precision or ("fp32,bf16" if args.device == "cuda" else "")).split(",")
    precisions = [p.strip() for p in precisions if p.strip()]
    if unknown := set(precisions) - {"fp32", "bf16", "fp16"}:
        parser.error(f"--precision: unknown {', '.join(sorted(unknown))}")
    for precision in precisions:
        try:
            check_precision(precision, device, "--precision")
        except StereoqError as err:
            parser.error(str(err))
    try:
        cfg = load_config(args.config, sets=args.sets)
        from stereoq.data import build_dataset

        build_dataset(cfg.data, "train", crop=True)[0]  # the data reads, before any timing
    except StereoqError as err:
        parser.error(str(err))
    batch = args.batch_size or cfg.stages.float_.batch_size
    times = step_times(cfg, batch, args.height, args.width, args.steps, args.warmup,
                       args.baseline, device)
    faults = times.pop("page_faults_per_step")
    step = times["step"]["median_s"]
    data = data_rate(cfg, 16)
    pipeline = [
        pipeline_rates(cfg, device, precision, compiled, batch, args.steps,
                       args.warmup + compiled)  # the first compiled steps compile
        for precision in precisions for compiled in ((False, True) if args.compile else (False,))
    ]
    result = {
        "config": cfg.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
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
        "pipeline": pipeline,
    }
    rows = [(k, 1000 * v["median_s"], 1000 * v["min_s"], 1000 * v["max_s"])
            for k, v in times.items()]
    print_table(
        f"{cfg.name}: training step on {result['device']} at {args.height}x{args.width}, "
        f"batch {batch}, {result['threads']} threads ({args.steps} steps"
        f"{', baseline' if args.baseline else ''}; {faults:.0f} page faults/step)",
        ["phase", "median ms", "min ms", "max ms"],
        rows,
    )
    print_table("throughput", ["what", "samples/s"], [
        ("model (forward + backward + Adam)", result["samples_per_s"]),
        (f"data pipeline ({cfg.data.source}, crop {cfg.data.train_crop})", data),
    ])
    if pipeline:
        print_table(
            f"training fed by the data pipeline ({cfg.data.source}, crop {cfg.data.train_crop}, "
            f"{cfg.data.num_workers} workers), batch {batch}, {args.steps} steps",
            ["precision", "compile", "samples/s", "model samples/s", "waiting for data %"],
            [(r["precision"], "yes" if r["compile"] else "no", r["samples_per_s"],
              r["model_samples_per_s"], 100 * r["data_wait_share"]) for r in pipeline],
        )
    print(f"saved {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
