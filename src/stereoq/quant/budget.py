"""Mixed precision under an accuracy budget: which layers calibration raises to 16 bits (or
float) so that the quantized model's EPE stays within ``stages.calibration.budget`` of the
float model's.

1. Calibrate the configured scheme and measure float and quantized EPE on the budget's
   validation frames (the fake-quant graph, quantizers off and on). Within budget: done.
2. For each layer (``stereoq.quant.sensitivity``) not already at the target precision or set by
   the config's overrides, the EPE it buys back when raised alone, simulated on that graph
   (its activation quantizers off for int16, all its quantizers off for float).
3. Candidates: the layers that buy something back, most EPE per unit of cost first. A raise
   costs the layer's own op and the convolutions that read its output (they then read a
   16-bit or float tensor; ONNX Runtime has no int16 kernels and runs them in float).
   ``cost: latency`` measures it on the deployment backend (``Timing``, from
   ``stereoq.deploy.layer_latency``): the graph with no candidate raised and the graph with
   all of them raised are exported, compiled and profiled, and each layer's nodes are timed in
   both; a layer's cost is the time its own nodes and its convolution readers gain (never
   below ``COST_FLOOR`` of the model's latency, the profiler's resolution). ``cost: macs``
   uses ``sensitivity``'s proxy instead, the MACs that leave the int8 kernels (no export).
4. Raise them one by one in simulation (cumulative) until the simulated EPE meets the budget,
   drop again, costliest first, each raise the budget holds without (``_prune``), then
   calibrate the real mixed-precision graph and measure it; while it misses the budget,
   simulate further raises on that graph the same way and calibrate again, up to
   ``max_layers`` layers in all. With measured latency, the chosen graph is timed on the
   backend too: the latency paid for the accuracy.

Every step is recorded (``record``): the layers raised, simulated and measured EPEs, and the
costs; ``RUN_DIR/calibration/mixed_precision.json`` holds it, and the later stages read the
raised layers from it (``stereoq.quant.recipes``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from torch import Tensor
from torch.fx import GraphModule

from stereoq.engine.report import Reporter
from stereoq.quant.latency import MeasureLatency, Timing
from stereoq.quant.sensitivity import (
    Frames,
    Layer,
    conv_readers,
    epe,
    except_for,
    layers,
    measure_sqnr_and_costs,
    quantized_only,
)
from stereoq.settings.stages import AccuracyBudget

Calibrate = Callable[[dict[str, str]], GraphModule]
"""Raised layers (name -> precision) -> the calibrated fake-quant graph, frozen, eval mode."""
Predictor = Callable[[GraphModule], Callable[[Tensor], Tensor]]

COST_FLOOR = 1e-3
"""Smallest cost of a raise, as a share of the model's latency (the profiler's resolution: a
layer whose nodes gained nothing measurable still costs something)."""


def _is_16_bit(layer: Layer) -> bool:
    return bool(layer.outputs) and all(q.quant_max > 255 for q in layer.outputs)


def _raised_quantizers(layer: Layer, raise_to: str) -> list:
    """The quantizers a raise switches off in simulation."""
    return layer.quantizers if raise_to == "float" else layer.activations()


def search(
    calibrate: Calibrate,
    predictor: Predictor,
    frames: Frames,
    maxdisp: float,
    budget: AccuracyBudget,
    fixed: list[str],
    reporter: Reporter | None = None,
    latency: MeasureLatency | None = None,
    reference: str = "ground_truth",
) -> tuple[GraphModule, dict[str, Any]]:
    """The calibrated graph that meets ``budget`` (or the best tried) and the search's record.

    ``fixed``: the config's override patterns; the search leaves the layers they match alone.
    ``latency``: times a graph on the backend; needed for ``budget.cost == "latency"``.
    ``reference``: what ``frames.disparity`` is, for the record: ``ground_truth`` or
    ``float_model`` (the float model's own disparity, ``sensitivity.against_model``).
    """
    if budget.cost == "latency" and latency is None:
        raise ValueError("budget.cost is latency: pass a latency measurement")
    reporter = reporter or Reporter()
    start = time.perf_counter()
    graph = calibrate({})
    predict = predictor(graph)
    with quantized_only(graph, []):
        float_epe = epe(predict, frames, maxdisp)
    default_epe = epe(predict, frames, maxdisp)
    allowed = budget.allowed_px(float_epe)
    record: dict[str, Any] = {
        "budget": budget.model_dump(),
        "budget_text": budget.describe(reference),
        "against": reference,
        "frames": len(frames),
        "float_epe_px": float_epe,
        "allowed_increase_px": allowed,
        "default_epe_px": default_epe,
        "steps": [{"raised": [], "epe_px": default_epe, "measured": True}],
        "raised": {},
    }

    def meets(value: float) -> bool:
        return value - float_epe <= allowed

    if meets(default_epe):
        return graph, _finish(record, default_epe, True, start)
    found = layers(graph)
    _, costs, total = measure_sqnr_and_costs(graph, predict, found, frames)
    candidates = []
    reporter.task("budget: layers", len(found))
    for layer in found:
        reporter.advance(1)
        if any(fnmatchcase(layer.name, p) for p in fixed) or (
            budget.raise_to == "int16" and _is_16_bit(layer)
        ):
            continue
        off = _raised_quantizers(layer, budget.raise_to)
        with quantized_only(graph, except_for(graph, off)):
            recovered = default_epe - epe(predict, frames, maxdisp)
        if recovered > 0.0:
            candidates.append({"layer": layer.name, "kind": layer.kind,
                               "recovered_px": recovered, "cost_macs": costs[layer.name]})
    reporter.done()
    record["cost"] = budget.cost
    record["total_macs"] = total
    default_timing = None
    if budget.cost == "latency" and candidates and latency is not None:
        reporter.note(f"budget: timing the model with none and all of {len(candidates)} "
                      f"candidate layer(s) at {budget.raise_to}")
        default_timing = latency(graph)
        raised_timing = latency(
            calibrate(dict.fromkeys((c["layer"] for c in candidates), budget.raise_to))
        )
        costs_ms = latency_costs(found, default_timing, raised_timing)
        floor = COST_FLOOR * default_timing.median_ms
        for c in candidates:
            c["cost_ms"] = costs_ms.get(c["layer"], 0.0)
        candidates.sort(key=lambda c: -c["recovered_px"] / max(c["cost_ms"], floor))
        record["latency"] = {
            "where": default_timing.where,
            "default_ms": default_timing.median_ms,
            "all_candidates_raised_ms": raised_timing.median_ms,
            "other_ms": {"default": default_timing.other_ms, "raised": raised_timing.other_ms},
        }
    else:
        candidates.sort(key=lambda c: -c["recovered_px"] / max(c["cost_macs"], 1.0))
    record["candidates"] = candidates
    remaining = [c["layer"] for c in candidates[: budget.max_layers]]
    cost_key = "cost_ms" if default_timing is not None else "cost_macs"
    cost_of = {c["layer"]: c[cost_key] for c in candidates}
    chosen: list[str] = []
    measured = default_epe
    while remaining:
        # Simulate on the graph in hand, adding candidates until the budget would hold; then
        # calibrate the real mixed-precision graph and measure it.
        by_name = {layer.name: layer for layer in layers(graph)}
        added: list[str] = []
        simulate = partial(_simulated_epe, graph, predictor(graph), by_name, budget.raise_to,
                           frames, maxdisp)
        simulated = default_epe
        for name in remaining:
            added.append(name)
            simulated = simulate(added)
            record["steps"].append(
                {"raised": chosen + added, "epe_px": simulated, "measured": False}
            )
            if meets(simulated):
                break
        tried = len(added)
        if meets(simulated):
            added = _prune(added, cost_of, simulate, meets, chosen, record)
        chosen += added
        remaining = remaining[tried:]
        reporter.note(f"budget: calibrating with {len(chosen)} layer(s) at {budget.raise_to}")
        graph = calibrate(dict.fromkeys(chosen, budget.raise_to))
        measured = epe(predictor(graph), frames, maxdisp)
        record["steps"].append({"raised": list(chosen), "epe_px": measured, "measured": True})
        if meets(measured):
            break
    record["raised"] = dict.fromkeys(chosen, budget.raise_to)
    record["raised_macs"] = sum(costs.get(name, 0.0) for name in chosen)
    if default_timing is not None and latency is not None and chosen:
        reporter.note("budget: timing the chosen model")
        record["latency"]["chosen_ms"] = latency(graph).median_ms
    return graph, _finish(record, measured, meets(measured), start)


def latency_costs(found: list[Layer], default: Timing, raised: Timing) -> dict[str, float]:
    """Per layer: the time its own nodes and the convolutions reading its output gain, in ms,
    between the graph with no candidate raised and the graph with all of them raised."""
    gain = {
        name: max(raised.layer_ms.get(name, 0.0) - default.layer_ms.get(name, 0.0), 0.0)
        for name in set(default.layer_ms) | set(raised.layer_ms)
    }
    kinds = {layer.name: layer.kind for layer in found}
    return {
        layer.name: gain.get(layer.name, 0.0)
        + sum(gain.get(r, 0.0) for r in conv_readers(layer, kinds))
        for layer in found
    }


def _simulated_epe(
    graph: GraphModule,
    predict: Callable[[Tensor], Tensor],
    by_name: dict[str, Layer],
    raise_to: str,
    frames: Frames,
    maxdisp: float,
    names: list[str],
) -> float:
    """EPE of ``graph`` with the layers ``names`` raised in simulation."""
    off = [q for name in names for q in _raised_quantizers(by_name[name], raise_to)]
    with quantized_only(graph, except_for(graph, off)):
        return epe(predict, frames, maxdisp)


def _prune(
    added: list[str],
    cost_of: dict[str, float],
    simulate: Callable[[list[str]], float],
    meets: Callable[[float], bool],
    chosen: list[str],
    record: dict[str, Any],
) -> list[str]:
    """The simulated raises that meet the budget without the ones it does not need: each
    layer, costliest first, is dropped when the rest still meet it (the greedy order can add
    cheap layers that a later, larger raise makes unnecessary)."""
    keep = list(added)
    for name in sorted(added, key=lambda n: -cost_of.get(n, 0.0)):
        if len(keep) == 1:
            break
        trial = [n for n in keep if n != name]
        value = simulate(trial)
        record["steps"].append(
            {"raised": chosen + trial, "epe_px": value, "measured": False, "without": name}
        )
        if meets(value):
            keep = trial
    return keep


def _finish(record: dict[str, Any], final: float, met: bool, start: float) -> dict[str, Any]:
    record["final_epe_px"] = final
    record["met"] = met
    record["seconds"] = time.perf_counter() - start
    return record
