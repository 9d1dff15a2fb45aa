"""Mixed precision under an accuracy budget: which layers calibration raises to 16 bits (or
float) so that the quantized model's EPE stays within ``stages.calibration.budget`` of the
float model's.

1. Calibrate the configured scheme and measure float and quantized EPE on the budget's
   validation frames (the fake-quant graph, quantizers off and on). Within budget: done.
2. For each layer (``stereoq.quant.sensitivity``) not already at the target precision or set by
   the config's overrides, the EPE it buys back when raised alone, simulated on that graph
   (its activation quantizers off for int16, all its quantizers off for float).
3. Candidates: the layers that buy something back, most EPE per unit of cost first. The cost is
   ``sensitivity``'s proxy, the MACs that leave the backend's int8 kernels (the layer's own and
   those of the convolutions reading it: ONNX Runtime has no int16 kernels and runs them in
   float); measured per-layer latency is not available before export.
4. Raise them one by one in simulation (cumulative) until the simulated EPE meets the budget,
   then calibrate the real mixed-precision graph and measure it; while it misses the budget,
   simulate further raises on that graph the same way and calibrate again, up to
   ``max_layers`` layers in all.

Every step is recorded (``record``): the layers raised, simulated and measured EPEs, and the
costs; ``RUN_DIR/calibration/mixed_precision.json`` holds it, and the later stages read the
raised layers from it (``stereoq.quant.recipes``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from torch import Tensor
from torch.fx import GraphModule

from stereoq.engine.report import Reporter
from stereoq.quant.sensitivity import (
    Frames,
    Layer,
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
) -> tuple[GraphModule, dict[str, Any]]:
    """The calibrated graph that meets ``budget`` (or the best tried) and the search's record.

    ``fixed``: the config's override patterns; the search leaves the layers they match alone.
    """
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
        "budget_text": budget.describe(),
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
    candidates.sort(key=lambda c: -c["recovered_px"] / max(c["cost_macs"], 1.0))
    record["candidates"] = candidates
    record["total_macs"] = total
    remaining = [c["layer"] for c in candidates[: budget.max_layers]]
    chosen: list[str] = []
    measured = default_epe
    while remaining:
        # Simulate on the graph in hand, adding candidates until the budget would hold; then
        # calibrate the real mixed-precision graph and measure it.
        by_name = {layer.name: layer for layer in layers(graph)}
        predict, off, added = predictor(graph), [], []
        for name in remaining:
            added.append(name)
            off += _raised_quantizers(by_name[name], budget.raise_to)
            with quantized_only(graph, except_for(graph, off)):
                simulated = epe(predict, frames, maxdisp)
            record["steps"].append(
                {"raised": chosen + added, "epe_px": simulated, "measured": False}
            )
            if meets(simulated):
                break
        chosen += added
        remaining = remaining[len(added):]
        reporter.note(f"budget: calibrating with {len(chosen)} layer(s) at {budget.raise_to}")
        graph = calibrate(dict.fromkeys(chosen, budget.raise_to))
        measured = epe(predictor(graph), frames, maxdisp)
        record["steps"].append({"raised": list(chosen), "epe_px": measured, "measured": True})
        if meets(measured):
            break
    record["raised"] = dict.fromkeys(chosen, budget.raise_to)
    record["raised_macs"] = sum(costs.get(name, 0.0) for name in chosen)
    return graph, _finish(record, measured, meets(measured), start)


def _finish(record: dict[str, Any], final: float, met: bool, start: float) -> dict[str, Any]:
    record["final_epe_px"] = final
    record["met"] = met
    record["seconds"] = time.perf_counter() - start
    return record
