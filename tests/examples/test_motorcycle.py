"""examples/motorcycle.py end to end: with a tiny untrained model (the scoring, not the model),
and with a shipped model (its card's figures)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from stereoq import weights
from stereoq.engine.checkpoint import save_checkpoint
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "motorcycle.py"


def example():
    spec = importlib.util.spec_from_file_location("motorcycle_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_motorcycle_example_scores_model_and_sgbm(tiny_config: Path, tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    # maxdisp 48 < the ground truth's 60 px: the example must downscale the pair to fit.
    data = yaml.safe_load(tiny_config.read_text())
    data["model"]["maxdisp"] = 48
    tiny_config.write_text(yaml.safe_dump(data))
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    state = {"model": build_model(cfg.model).state_dict()}
    save_checkpoint(get_stage(cfg, "float").artifact(), state)
    out = tmp_path / "moto"
    assert example().main(["--config", str(tiny_config), "--out", str(out)]) == 0
    report = json.loads((out / "motorcycle.json").read_text())
    # 0.95 * 48 / 59.9 px: the ground truth's largest disparity lands inside maxdisp.
    assert report["downscale"] == pytest.approx(0.761, abs=0.005)
    assert report["gt_max_px"] <= 0.95 * 48 + 1e-3
    assert report["size"] == [round(500 * report["downscale"]), round(741 * report["downscale"])]
    sgbm, model = report["metrics"]["OpenCV SGBM"], report["metrics"]["stereoq float"]
    assert report["metrics"]["stereoq float + refinement"]["pixels"] == model["pixels"]
    # SGBM on this pair is a known quantity (about 2 px EPE at full size): a wrong ground-truth
    # scale or a shifted ground truth would push it far up.
    assert sgbm["epe"] < 3.0 and sgbm["bad2"] < 20.0
    assert model["pixels"] == sgbm["pixels"] > 300_000 * report["downscale"] ** 2
    assert (out / "comparison.png").is_file() and (out / "infer" / "disparity.pfm").is_file()
    # By region: the same pixels as the overall score, split; the motorcycle hides about a tenth
    # of its pixels from the right camera (11 % at full size), where SGBM only guesses.
    regions = report["regions"]["OpenCV SGBM"]
    assert regions["all"]["pixels"] == sgbm["pixels"]
    assert regions["all"]["epe"] == pytest.approx(sgbm["epe"], rel=1e-4)
    assert 5.0 < regions["occluded"]["share"] < 20.0
    assert regions["occluded"]["epe"] > 2 * regions["visible"]["epe"]
    assert (regions["depth edges"]["pixels"] + regions["surfaces"]["pixels"]
            == regions["visible"]["pixels"])


@pytest.mark.slow
def test_a_shipped_model_scores_its_cards_figures(tmp_path: Path) -> None:
    """`--weights NAME` runs the shipped model as `stereoq infer --weights` does; its scores are
    the ones bench_weights.py wrote in its card (same pair, model and scoring)."""
    pytest.importorskip("skimage")
    name = weights.DEFAULT
    out = tmp_path / "moto"
    assert example().main(["--weights", name, "--out", str(out)]) == 0
    report = json.loads((out / "motorcycle.json").read_text())
    assert report["weights"] == name and report["stage"] is None
    card = weights.card(name)["measured"]["motorcycle"]
    for row, method in ((f"stereoq {name}", "float"),
                        (f"stereoq {name} + refinement", "float refined")):
        got = report["metrics"][row]
        assert got["epe"] == pytest.approx(card[method]["epe"], abs=0.01)
        assert got["bad2"] == pytest.approx(card[method]["bad2"], abs=0.2)
        for region in ("visible", "occluded"):
            assert report["regions"][row][region]["epe"] == pytest.approx(
                card["regions"][region][method]["epe"], abs=0.01)
    assert report["refine"] == weights.card(name)["measured"]["refine"]["config"]


@pytest.mark.parametrize("extra", [["--stage", "qat"], ["--checkpoint", "x.pt"]])
def test_weights_with_a_stage_or_checkpoint_is_a_one_line_error(extra, capsys) -> None:
    assert example().main(["--weights", weights.DEFAULT, *extra]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --weights runs a shipped model: no --stage or --checkpoint"


def test_an_unknown_shipped_model_is_a_one_line_error(capsys) -> None:
    assert example().main(["--weights", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: unknown shipped model 'nope'")
