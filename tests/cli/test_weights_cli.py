"""The shipped models from the commands: ``infer``/``predict --weights``, infer's default model
before any training, ``train --init-from NAME``, the help that lists them, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stereoq import weights
from stereoq.cli import app
from stereoq.engine.checkpoint import load_checkpoint, save_checkpoint
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage

from .conftest import invoke

NAME = weights.DEFAULT


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def pair(tmp_path: Path) -> list[str]:
    """A textured pair 48x80, the right view shifted 6 px, as --imgl/--imgr options."""
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, size=(48, 86, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "l.png"), wide[:, 6:])
    cv2.imwrite(str(tmp_path / "r.png"), wide[:, :80])
    return ["--imgl", str(tmp_path / "l.png"), "--imgr", str(tmp_path / "r.png"),
            "--baseline", "0.1", "--f", "100"]


def test_infer_weights_writes_every_output(tiny_config, pair, tmp_path, monkeypatch,
                                           capsys) -> None:
    out_dir = tmp_path / "out"
    code, out, err = invoke(monkeypatch, capsys, "infer", "-c", str(tiny_config), *pair,
                            "--weights", NAME, "--save-path", str(out_dir), "--ply")
    assert code == 0, err
    assert f"shipped model {NAME}" in out and "note:" not in err
    for name in ("disparity.pfm", "disparity.png", "depth_mm.png", "depth.png", "overview.png",
                 "pointcloud.ply"):
        assert (out_dir / name).is_file(), name
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["weights"] == NAME
    assert summary["artifact"] == str(weights.model_file(NAME))
    # The shipped model's own section, not the tiny config's (maxdisp 64).
    assert summary["maxdisp_px"] == weights.config(NAME).model.maxdisp != 64
    from stereoq.data.pfm import read_pfm

    disp = read_pfm(out_dir / "disparity.pfm")
    assert disp.shape == (48, 80) and np.isfinite(disp).all()


def test_infer_runs_the_default_model_until_the_run_has_one(tiny_config, pair, tmp_path,
                                                            monkeypatch, capsys) -> None:
    args = ["infer", "-c", str(tiny_config), *pair, "--save-path", str(tmp_path / "o")]
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert code == 0, err
    note = one_line(err)
    assert note.startswith("note: no float model in ") and f"shipped model {NAME}" in note
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["weights"] == NAME

    cfg = load_config(str(tiny_config))
    save_checkpoint(get_stage(cfg, "float").artifact(), {"model": build_model(cfg.model)
                                                         .state_dict()})
    code, _, err = invoke(monkeypatch, capsys, *args)
    assert code == 0 and "note:" not in err, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["weights"] is None and summary["artifact"].endswith("float/best.pt")


def test_infer_refines_by_default_and_no_refine_gives_the_network(
    tiny_config, pair, tmp_path, monkeypatch, capsys
) -> None:
    from stereoq.data.images import read_rgb
    from stereoq.data.pfm import read_pfm
    from stereoq.data.transforms import prepare_pair
    from stereoq.infer.refine import refine
    from stereoq.infer.run import DisparityEstimator

    outputs = {}
    for flag in ("--refine", "--no-refine"):
        out_dir = tmp_path / flag
        code, out, err = invoke(monkeypatch, capsys, "infer", "-c", str(tiny_config), *pair,
                                "--weights", NAME, "--save-path", str(out_dir), flag)
        assert code == 0, err
        assert ("photometric refinement" in out) == (flag == "--refine")
        summary = json.loads((out_dir / "summary.json").read_text())
        outputs[flag] = (summary["refine"], read_pfm(out_dir / "disparity.pfm"))
    cfg = load_config(str(tiny_config))
    assert outputs["--refine"][0] == cfg.refine.model_dump() and outputs["--no-refine"][0] is None
    left, right = read_rgb(Path(pair[1])), read_rgb(Path(pair[3]))
    network = DisparityEstimator(cfg, "float", weights=NAME)
    np.testing.assert_allclose(outputs["--no-refine"][1], network(left, right), atol=1e-5)
    x = prepare_pair(left, right, network.cfg.data)[None]
    expected = refine(x, torch.from_numpy(outputs["--no-refine"][1])[None, None],
                      network.cfg.data, cfg.refine)[0, 0].numpy()
    np.testing.assert_allclose(outputs["--refine"][1], expected, atol=1e-4)
    assert not np.allclose(outputs["--refine"][1], outputs["--no-refine"][1], atol=1e-3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weights", "nope"], f"option --weights: unknown shipped model 'nope' \\(one of "
         f".*{NAME}"),
        (["--weights", NAME, "--stage", "qat"], "option --weights: .* not with --stage qat"),
        (["--weights", NAME, "--checkpoint", "x.pt"], "option --weights: not with --checkpoint"),
        (["--weights", NAME, "--set", "model.maxdisp=192"],
         f"option --set model.maxdisp=192: the shipped model {NAME} brings its own"),
        (["--weights", NAME, "--set", "data.mean=0"], "option --set data.mean=0"),
    ],
)
def test_infer_weights_mistakes_are_one_line_exit_2(
    tiny_config, pair, tmp_path, monkeypatch, capsys, extra: list[str], message: str
) -> None:
    import re

    code, _, err = invoke(monkeypatch, capsys, "infer", "-c", str(tiny_config), *pair,
                          "--save-path", str(tmp_path / "o"), *extra)
    assert code == 2, err
    assert re.search(message, one_line(err)), err
    assert not (tmp_path / "o").exists()


def test_predict_weights_on_the_configured_val_set(tiny_config, tmp_path, monkeypatch,
                                                   capsys) -> None:
    code, out, err = invoke(monkeypatch, capsys, "predict", "-c", str(tiny_config),
                            "--weights", NAME, "--batch-size", "2")
    assert code == 0, err
    assert NAME in out and "EPE" in out
    saved = json.loads((tmp_path / "runs" / "tiny" / f"predict-{NAME}.json").read_text())
    metrics = saved["results"][NAME]
    assert metrics["images"] == 4 and 0 < metrics["epe"] < 64
    assert saved["maxdisp"] == weights.config(NAME).model.maxdisp
    code, _, err = invoke(monkeypatch, capsys, "predict", "-c", str(tiny_config),
                          "--weights", NAME, "--refine", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    both = json.loads((tmp_path / "r.json").read_text())["results"]
    assert list(both) == [NAME, f"{NAME} refined"]
    assert both[NAME]["epe"] == pytest.approx(metrics["epe"], abs=1e-6)
    assert both[f"{NAME} refined"]["images"] == 4
    assert both[f"{NAME} refined"]["epe"] != pytest.approx(metrics["epe"], abs=1e-4)
    for extra, needle in ((["--stage", "all"], "not with --stage all"),
                          (["--sensitivity", "2"], "--sensitivity: not with --weights")):
        code, _, err = invoke(monkeypatch, capsys, "predict", "-c", str(tiny_config),
                              "--weights", NAME, *extra)
        assert code == 2 and needle in one_line(err), err


def test_train_init_from_a_shipped_model(tmp_path, monkeypatch, capsys) -> None:
    """One float epoch of 2 tiny scenes at a learning rate that leaves the weights in place:
    the run starts from the shipped weights (new schedule)."""
    small = ["--set", f"output_dir={tmp_path}", "--set", "name=ft",
             "--set", "data.synthetic.train_count=2", "--set", "data.synthetic.val_count=1",
             "--set", "data.synthetic.height=64", "--set", "data.synthetic.width=128",
             "--set", "data.train_crop=[64,128]", "--set", "data.num_workers=0",
             "--set", "stages.float.scheduler.warmup_epochs=0",
             "--set", "stages.float.val_batch_size=1"]
    code, out, err = invoke(monkeypatch, capsys, "train", "-c", NAME, "--init-from", NAME,
                            "--epochs", "1", "--batch-size", "2", "--lr", "1e-12", *small)
    assert code == 0, err
    assert f"initialised the weights from the shipped model {NAME}" in out
    last = load_checkpoint(tmp_path / "ft" / "float" / "last.pt")
    assert last["epoch"] == 1
    # the shipped weights as the run's config (the model's own) holds them
    model = build_model(weights.config(NAME).model)
    model.load_state_dict(weights.state_dict(NAME))
    shipped = model.state_dict()
    convs = [k for k, v in shipped.items() if k.endswith("weight") and v.dim() == 4]
    assert convs
    for key in convs:
        torch.testing.assert_close(last["model"][key].contiguous(), shipped[key], atol=1e-6,
                                   rtol=0)


def test_train_init_from_errors_name_both_kinds(tiny_config, tmp_path, monkeypatch,
                                                capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(monkeypatch, capsys, "train", "-c", str(tiny_config), "--init-from",
                          "nope")
    assert code == 2
    assert one_line(err) == (f"error: option --init-from: nope: no such file, and not a shipped "
                             f"model ({', '.join(weights.names())})")
    # The tiny config builds another model than the shipped one: named, one line.
    code, _, err = invoke(monkeypatch, capsys, "train", "-c", str(tiny_config), "--init-from",
                          NAME)
    assert code == 1
    assert "holds another model than this config's" in one_line(err)
    assert f"with its own config: --config {NAME} --init-from {NAME}" in one_line(err)


@pytest.mark.parametrize("command", ["infer", "predict"])
def test_help_lists_the_shipped_models(command: str) -> None:
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    for name, summary in weights.summaries().items():
        assert f"{name} ({summary[:40]}" in res.output
