"""Per-layer sensitivity and the accuracy-budget search, on the tiny network with one layer made
deliberately coarse (its output scale forced 64x too large)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from torch.fx import GraphModule

from stereoq.quant.budget import COST_FLOOR, latency_costs, search
from stereoq.quant.latency import Timing
from stereoq.quant.prepare import LastTwo, set_observers
from stereoq.quant.sensitivity import (
    Frames,
    Layer,
    layers,
    quantized_only,
    sensitivity,
)
from stereoq.quant.sensitivity_chart import sensitivity_chart
from stereoq.settings.stages import AccuracyBudget
from stereoq.stages.quantized import padded_predictor

from .conftest import calibrated_fake_quant, random_pair, tiny_cfg

COARSE = "refinement.levels.2.offset.0"


@pytest.fixture(scope="module")
def graph() -> GraphModule:
    """A calibrated tiny fake-quant graph (eval, frozen) whose ``COARSE`` layer is coarse."""
    torch.set_num_threads(1)
    fake_quant = calibrated_fake_quant()
    fake_quant.eval()
    set_observers(fake_quant, False)
    (coarse,) = [layer for layer in layers(fake_quant) if layer.name == COARSE]
    coarse.outputs[0].scale.mul_(64.0)
    return fake_quant


def _predict(graph: GraphModule):  # noqa: ANN202
    return padded_predictor(tiny_cfg(), LastTwo(graph))


@pytest.fixture(scope="module")
def frames(graph: GraphModule) -> Frames:
    """Random pairs; the ground truth is the float model's disparity (at least 1 px)."""
    x = random_pair(3, seed=5)
    with torch.no_grad(), quantized_only(graph, []):
        gt = _predict(graph)(x).clamp(min=1.0)
    return Frames(x, gt)


def test_every_quantizer_belongs_to_one_layer(graph: GraphModule) -> None:
    found = layers(graph)
    names = [layer.name for layer in found]
    assert len(names) == len(set(names))
    assert names[0] == "input" and "head" in names and "head.regression" in names
    owned = [id(q) for layer in found for q in layer.quantizers]
    assert len(owned) == len(set(owned))
    by_name = {layer.name: layer for layer in found}
    assert by_name[COARSE].kind == "conv" and len(by_name[COARSE].weights) == 1
    assert by_name["head"].kind == "cost volume"
    assert by_name["neck.stage1.0"].kind == "add"
    assert all(layer.outputs for layer in found)


def test_the_coarse_layer_ranks_first(graph: GraphModule, frames: Frames) -> None:
    report = sensitivity(graph, _predict(graph), frames, tiny_cfg().model.maxdisp)
    assert report["ranking"][0] == COARSE
    rows = {r["layer"]: r for r in report["layers"]}
    coarse = rows[COARSE]
    others = [r for name, r in rows.items() if name != COARSE]
    assert coarse["delta_only_px"] > max(r["delta_only_px"] for r in others)
    assert coarse["sqnr_db"] < min(r["sqnr_db"] for r in others)
    assert report["quantized_epe_px"] > report["float_epe_px"]
    assert [r["order"] for r in report["layers"]] == list(range(len(rows)))
    assert coarse["cost_macs"] > 0
    picture = sensitivity_chart({**report, "stage": "calibration"})
    assert picture.ndim == 3 and picture.shape[1] >= 12 * len(rows)
    # the quantizers are left as they were
    assert all(int(q.fake_quant_enabled[0]) == 1 for layer in layers(graph)
               for q in layer.quantizers)


def test_budget_search_raises_the_coarse_layer_and_stops_when_the_budget_holds(
    graph: GraphModule, frames: Frames
) -> None:
    raised_calls: list[dict[str, str]] = []
    by_name = {layer.name: layer for layer in layers(graph)}

    def calibrate_with(raised: dict[str, str]) -> GraphModule:
        # stands in for re-calibration: a raised layer's activations stop rounding
        raised_calls.append(dict(raised))
        for layer in by_name.values():
            for q in layer.activations():
                q.fake_quant_enabled[0] = 0 if layer.name in raised else 1
        return graph

    maxdisp = tiny_cfg().model.maxdisp
    report = sensitivity(graph, _predict(graph), frames, maxdisp)
    gap = report["quantized_epe_px"] - report["float_epe_px"]
    rest = report["quantized_epe_px"] - {r["layer"]: r for r in report["layers"]}[COARSE][
        "epe_left_float_px"]
    # a budget that the coarse layer alone (and nothing cheaper) closes
    budget = AccuracyBudget(max_increase_px=gap - 0.5 * rest, frames=len(frames), cost="macs")
    try:
        _, record = search(calibrate_with, _predict, frames, maxdisp, budget, [])
    finally:
        calibrate_with({})
    assert record["met"]
    assert COARSE in record["raised"] and record["raised"][COARSE] == "int16"
    assert record["final_epe_px"] - record["float_epe_px"] <= record["allowed_increase_px"]
    measured = [s for s in record["steps"] if s["measured"]]
    assert measured[0]["raised"] == [] and measured[-1]["raised"] == list(record["raised"])
    # it stopped adding at the first simulated step that met the budget ...
    def within(step: dict) -> bool:
        return step["epe_px"] - record["float_epe_px"] <= record["allowed_increase_px"]

    added = [s for s in record["steps"] if not s["measured"] and "without" not in s]
    assert within(added[-1]) and not any(within(s) for s in added[:-1])
    # ... then dropped every layer added before COARSE (COARSE alone holds the budget), and
    # tried dropping each at most once
    tried = [s for s in record["steps"] if "without" in s]
    assert len({s["without"] for s in tried}) == len(tried)
    assert {s["without"] for s in tried if within(s)} == set(added[-1]["raised"]) - {COARSE}
    assert record["raised"] == {COARSE: "int16"}
    assert raised_calls[0] == {} and raised_calls[-2] == record["raised"]
    json.dumps(record)  # the record is plain JSON


def test_a_budget_already_met_raises_nothing(graph: GraphModule, frames: Frames) -> None:
    budget = AccuracyBudget(max_increase_px=1e6, frames=len(frames))
    timed: list[GraphModule] = []
    _, record = search(lambda raised: graph, _predict, frames, tiny_cfg().model.maxdisp,
                       budget, [], latency=lambda g: timed.append(g))  # type: ignore[arg-type]
    assert record["met"] and record["raised"] == {} and len(record["steps"]) == 1
    assert timed == []  # nothing to raise: nothing exported or timed


def test_measured_latency_orders_the_raises_and_the_chosen_model_is_timed(
    graph: GraphModule, frames: Frames
) -> None:
    """Two layers buy back EPE; the one whose raise the backend makes slow goes last."""
    by_name = {layer.name: layer for layer in layers(graph)}
    state: dict[str, dict[str, str]] = {"raised": {}}

    def calibrate_with(raised: dict[str, str]) -> GraphModule:
        state["raised"] = dict(raised)
        for layer in by_name.values():
            for q in layer.activations():
                q.fake_quant_enabled[0] = 0 if layer.name in raised else 1
        return graph

    timings: list[dict[str, str]] = []

    def latency(_graph: GraphModule) -> Timing:
        raised = state["raised"]
        timings.append(raised)
        # raising COARSE makes its own conv a second slower; every other raise is free
        per_layer = {name: 1.0 + (1000.0 if name == COARSE and name in raised else 0.0)
                     for name in by_name}
        return Timing(sum(per_layer.values()) + 1.0, per_layer, 1.0, "test backend")

    maxdisp = tiny_cfg().model.maxdisp
    budget = AccuracyBudget(max_increase_px=0.0, frames=len(frames), max_layers=40)
    try:
        _, record = search(calibrate_with, _predict, frames, maxdisp, budget, [],
                           latency=latency)
    finally:
        calibrate_with({})
    candidates = record["candidates"]
    costs = {c["layer"]: c["cost_ms"] for c in candidates}
    assert costs[COARSE] == pytest.approx(1000.0)
    # every other raise is free, except that of a layer COARSE reads: it takes COARSE out of
    # the int8 kernels too
    feeds_coarse = {name for name, layer in by_name.items() if COARSE in layer.readers}
    assert len(costs) > 1
    assert all(v == (1000.0 if k in feeds_coarse else 0.0) for k, v in costs.items()
               if k != COARSE)
    # the most EPE per measured ms first (a free raise costs the floor): COARSE, which buys
    # back the most EPE, is no longer first
    floor = COST_FLOOR * record["latency"]["default_ms"]
    ratios = [c["recovered_px"] / max(c["cost_ms"], floor) for c in candidates]
    assert ratios == sorted(ratios, reverse=True)
    assert max(candidates, key=lambda c: c["recovered_px"])["layer"] == COARSE
    assert candidates[0]["layer"] != COARSE
    # timed with none raised, with every candidate raised, and the chosen model at the end
    assert timings[0] == {} and set(timings[1]) == set(costs)
    assert timings[-1] == record["raised"]
    assert record["latency"]["where"] == "test backend"
    assert record["latency"]["chosen_ms"] >= record["latency"]["default_ms"]
    json.dumps(record)


def test_latency_costs_count_the_layer_and_its_conv_readers() -> None:
    a, b, c = Layer("a", "conv", readers=["b", "c"]), Layer("b", "conv"), Layer("c", "add")
    default = Timing(10.0, {"a": 1.0, "b": 2.0, "c": 1.0}, 0.0, "")
    raised = Timing(20.0, {"a": 1.5, "b": 5.0, "c": 9.0}, 0.0, "")
    costs = latency_costs([a, b, c], default, raised)
    # a: its own 0.5 ms and its conv reader b's 3 ms; the add c reading it is not counted
    assert costs == {"a": pytest.approx(3.5), "b": pytest.approx(3.0), "c": pytest.approx(8.0)}
    faster = Timing(20.0, {"a": 0.5, "b": 2.0, "c": 1.0}, 0.0, "")
    assert latency_costs([a, b, c], default, faster)["a"] == 0.0  # noise below zero: free


def test_latency_needs_a_measurement(monkeypatch: pytest.MonkeyPatch, graph: GraphModule,
                                     frames: Frames) -> None:
    from stereoq.errors import StereoqError
    from stereoq.quant import latency as latency_module

    monkeypatch.setattr(latency_module, "_PROVIDER", [])
    with pytest.raises(StereoqError, match="cost: latency.*cost: macs"):
        latency_module.latency_provider()
    with pytest.raises(ValueError, match="latency"):
        search(lambda raised: graph, _predict, frames, 1.0,
               AccuracyBudget(max_increase_px=0.0), [])


def test_budget_takes_exactly_one_limit() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AccuracyBudget()
    with pytest.raises(ValueError, match="exactly one"):
        AccuracyBudget(max_increase_px=0.1, max_increase_pct=1.0)
    assert AccuracyBudget(max_increase_pct=2.0).allowed_px(3.0) == pytest.approx(0.06)


def test_chart_is_written(tmp_path: Path, graph: GraphModule, frames: Frames) -> None:
    from stereoq.quant.sensitivity_chart import save_chart

    report = {"stage": "qat", "frames": 1, "height": 64, "width": 128, "float_epe_px": 1.0,
              "quantized_epe_px": 1.1,
              "layers": [{"layer": f"l{i}", "kind": "conv", "order": i, "rank": i + 1,
                          "delta_only_px": 0.1 * i, "recovered_px": -0.01 * i,
                          "sqnr_db": float("inf") if i == 0 else 20.0} for i in range(3)]}
    save_chart(report, tmp_path / "s.png")
    assert cv2.imread(str(tmp_path / "s.png")) is not None
