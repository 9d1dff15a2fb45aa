"""The shipped models (``stereoq.weights``): each loads strictly, matches its card, predicts, and
its int8 form agrees with it; names are checked and files are read without running code."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stereoq import weights
from stereoq.engine.loop import init_source
from stereoq.errors import StereoqError
from stereoq.models.build import build_model
from stereoq.settings import load_config

NAMES = weights.names()

MAX_MODEL_BYTES = 2_000_000
"""Shipped weights stay small: the package carries every one of them."""


def test_the_default_ships() -> None:
    assert weights.DEFAULT in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_loads_strictly_and_matches_its_card(name: str) -> None:
    card = weights.card(name)
    assert card["name"] == name and card["summary"] and "\n" not in card["summary"]
    model_cfg, state = weights.load(name)
    model = build_model(model_cfg)
    model.load_state_dict(state, strict=True)
    arch = card["architecture"]
    assert sum(p.numel() for p in model.parameters()) == arch["params"]
    assert model_cfg.maxdisp == arch["maxdisp_px"]
    assert len(state) == arch["state_dict_entries"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    path = weights.model_file(name)
    data = path.read_bytes()
    assert len(data) == arch["model_pt_bytes"] <= MAX_MODEL_BYTES
    assert hashlib.sha256(data).hexdigest() == arch["model_pt_sha256"]


def generated_val(name: str, count: int, height: int = 128, width: int = 256) -> list[dict]:
    """``count`` generated validation scenes of the model's own data, smaller than it trained
    on (fast), as network input (1, 6, H, W) and ground truth (1, 1, H, W)."""
    from stereoq.data import build_dataset

    cfg = weights.config(name, sets=[f"data.synthetic.height={height}",
                                     f"data.synthetic.width={width}",
                                     f"data.synthetic.val_count={count}"])
    dataset = build_dataset(cfg.data, "val", crop=False)
    return [{"x": torch.cat([s["left"], s["right"]])[None], "disp": s["disp"][None]}
            for s in (dataset[i] for i in range(count))]


def epe(predict, frames: list[dict], maxdisp: int) -> float:
    from stereoq.engine.metrics import DisparityMetrics

    metrics = DisparityMetrics(maxdisp)
    with torch.no_grad():
        for frame in frames:
            metrics.update(predict(frame["x"]).float(), frame["disp"])
    return metrics.compute()["epe"]


@pytest.mark.parametrize("name", NAMES)
def test_predicts_finite_disparity_better_than_untrained(name: str) -> None:
    frames = generated_val(name, 2)
    model = weights.eval_model(name)
    with torch.no_grad():
        disp = model(frames[0]["x"])
    assert disp.shape == frames[0]["disp"].shape and torch.isfinite(disp).all()
    maxdisp = weights.config(name).model.maxdisp
    torch.manual_seed(0)
    untrained = build_model(weights.config(name).model).eval()
    # Trained weights, not just a model that runs: light-scenes 3.3 px, a fresh model 22.3 px.
    assert epe(model, frames, maxdisp) < 0.6 * epe(untrained, frames, maxdisp)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_int8_agrees_with_float(name: str, tmp_path: Path) -> None:
    """The calibration recipe's int8 model (BN folded, percentile observers over two generated
    training scenes, converted), run as the deployment runtime computes it, against float on
    two validation scenes at 128x256. Measured with the default 7-bit weights: light-scenes EPE
    3.092 -> 3.218 px (+4.0 %), mean |int8 - float| 0.36 px; light-scenes-4x 2.740 -> 2.909
    (+6.2 %), 0.44 px (8-bit weights gave light-scenes +0.2 % and 0.18 px). The bounds leave
    room for other machines' rounding, not for a broken scheme (random ranges or a lost layer
    give px-scale errors)."""
    from stereoq.engine.report import Reporter
    from stereoq.quant.prepare import LastTwo, calibrate, convert, prepare
    from stereoq.quant.recipes import calibration_recipe
    from stereoq.quant.runtime_eval import runtime_eval
    from stereoq.stages.calibration import CalibrationStage
    from stereoq.stages.quantized import padded_predictor

    cfg = weights.config(name, sets=[
        f"output_dir={tmp_path}", "data.synthetic.height=128", "data.synthetic.width=256",
        "data.synthetic.train_count=2", "stages.calibration.batches=2",
        "stages.calibration.batch_size=1"])
    model = weights.eval_model(name)
    observed = prepare(model, calibration_recipe(cfg))
    calibrate(observed, CalibrationStage(cfg).calibration_batches(Reporter()))
    int8 = padded_predictor(cfg, runtime_eval(LastTwo(convert(observed))))

    frames = generated_val(name, 2)
    float_epe = epe(model, frames, cfg.model.maxdisp)
    int8_epe = epe(int8, frames, cfg.model.maxdisp)
    with torch.no_grad():
        gap = torch.cat([(int8(f["x"]) - model(f["x"])).abs().flatten() for f in frames])
    assert abs(int8_epe - float_epe) <= 0.10 * float_epe, (float_epe, int8_epe)
    assert gap.mean() <= 0.6, gap.mean()


def test_unknown_name_names_the_known_ones() -> None:
    for call in (weights.card, weights.load, weights.model_file, weights.eval_model):
        with pytest.raises(StereoqError, match=r"unknown shipped model 'nope' \(shipped: .*"
                           + weights.DEFAULT) as err:
            call("nope")
        assert err.value.exit_code == 2


def test_config_option_takes_a_shipped_models_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``--config NAME`` reads the model's own config.yaml (a file of that name wins); an
    unknown name's error lists shipped configs and models."""
    from stereoq.cli.common import resolve_config

    monkeypatch.chdir(tmp_path)
    assert load_config(resolve_config(weights.DEFAULT)) == weights.config(weights.DEFAULT)
    assert load_config(resolve_config(weights.DEFAULT)).model != load_config(None).model
    assert resolve_config(None) is None
    assert resolve_config("stereonet_sceneflow") == "stereonet_sceneflow"
    with pytest.raises(StereoqError, match=r"not a shipped config \(.*stereonet_synthetic.*\) "
                       r"or shipped model \(.*" + weights.DEFAULT) as err:
        resolve_config("nope")
    assert err.value.exit_code == 2
    Path(weights.DEFAULT).write_text("name: mine\n")
    assert load_config(resolve_config(weights.DEFAULT)).name == "mine"


def test_configure_takes_the_model_and_its_normalisation(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config), sets=["data.mean=0", "data.std=255", "data.color=rgb"])
    own = weights.config(weights.DEFAULT)
    got = weights.configure(cfg, weights.DEFAULT)
    assert got.model == own.model != cfg.model
    assert (got.data.color, got.data.mean, got.data.std) == (
        own.data.color, own.data.mean, own.data.std)
    # The rest is the config's: its data, run folder and recipes.
    assert got.data.synthetic == cfg.data.synthetic and got.run_dir == cfg.run_dir
    assert got.stages == cfg.stages


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This package's models plus a folder ``fake`` (the default's config and card) whose
    model.pt the test writes."""
    root = tmp_path / "weights"
    shutil.copytree(weights.model_file(weights.DEFAULT).parents[1], root,
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(root / weights.DEFAULT, root / "fake")
    card = json.loads((root / "fake" / weights.CARD_FILE).read_text())
    (root / "fake" / weights.CARD_FILE).write_text(json.dumps({**card, "name": "fake"}))
    monkeypatch.setattr(weights, "_root", lambda: root)
    weights._card.cache_clear()
    yield root / "fake"
    weights._card.cache_clear()


class RunsCode:
    """A pickled object whose loading would create ``path`` (a plain ``torch.load`` runs it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.path),))


def test_load_reads_weights_only(fake_package: Path, tmp_path: Path) -> None:
    witness = tmp_path / "code-ran"
    torch.save({"w": RunsCode(witness)}, fake_package / weights.MODEL_FILE)
    with pytest.raises(StereoqError, match=r"shipped model fake .* cannot be read: Weights only"):
        weights.state_dict("fake")
    assert not witness.exists()
    torch.save({"w": torch.zeros(1), "epoch": 3}, fake_package / weights.MODEL_FILE)
    with pytest.raises(StereoqError, match="not a state dict of tensors"):
        weights.state_dict("fake")
    torch.save({"w": torch.zeros(1)}, fake_package / weights.MODEL_FILE)
    with pytest.raises(StereoqError, match=r"shipped model fake: its weights do not fit"):
        weights.eval_model("fake")


def test_init_from_takes_a_file_first_then_a_name(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert init_source(weights.DEFAULT) == weights.DEFAULT
    Path(weights.DEFAULT).write_bytes(b"")  # a file of that name wins
    assert init_source(weights.DEFAULT) == Path(weights.DEFAULT)
    with pytest.raises(StereoqError, match=r"--init-from: nope: no such file, and not a shipped "
                       r"model \(.*" + weights.DEFAULT) as err:
        init_source("nope")
    assert err.value.exit_code == 2


def test_names_and_cards_need_no_torch() -> None:
    code = ("import sys, stereoq.cli, stereoq.weights as w; "
            "assert w.summaries() and w.card(w.DEFAULT); "
            "print(sorted(m for m in ('torch', 'torchao') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
