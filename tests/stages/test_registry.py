"""The stage registry owns every stage: order, CLI choices and help, and a stage added in one
place reaching train, predict, export and infer without another edit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch import Tensor, nn

from stereoq.settings import load_config
from stereoq.settings.stages import StagesConfig
from stereoq.stages import (
    get_stage,
    register,
    run_stage,
    stage_classes,
    stage_names,
    unregister,
)
from stereoq.stages.float_stage import FloatStage


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run ``stereoq ARGS`` in this process (so a stage registered here is seen)."""
    from stereoq.cli import main

    monkeypatch.setattr(sys, "argv", ["stereoq", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code or 0


def test_pipeline_order_and_predecessors(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    names = stage_names()
    assert names == ["float", "adapt", "calibration", "qat", "int_infer"]
    stages = [get_stage(cfg, n) for n in names]
    assert stages[0].previous is None
    for stage in stages[1:]:  # each starts from one before it in the pipeline
        assert stage.previous in names[: names.index(stage.name)]
    assert get_stage(load_config(str(tiny_config), sets=["stages.int_infer.source=calibration"]),
                     "int_infer").previous == "calibration"
    assert stages[names.index("calibration")].previous == "float"
    assert get_stage(load_config(str(tiny_config), sets=[
        "stages.calibration.source=adapt", "stages.qat.targets=distill"]),
        "calibration").previous == "adapt"


def test_every_stage_has_its_config_section(tiny_config: Path) -> None:
    cfg = load_config(str(tiny_config))
    for cls in stage_classes():
        assert get_stage(cfg, cls.name).recipe() is cfg.stages.section(cls.name)
        assert StagesConfig.section_fields(cls.name)
    assert cfg.stages.section("float").epochs == 1  # the section named as in the file


def test_unknown_stage_is_one_line_listing_the_registry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(monkeypatch, "train", "--stage", "bogus") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "option --stage: unknown stage 'bogus'" in err
    assert "float, adapt, calibration, qat, int_infer" in err
    assert cli(monkeypatch, "train", "--help") == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for cls in stage_classes():  # each stage with what it does, from the registry
        assert f"{cls.name} ({cls.summary})" in text


class FinetuneStage(FloatStage):
    """A stage a user might add: one epoch more of float training from float's best.pt."""

    name = "finetune"
    summary = "fine-tune the float model for one epoch"
    previous = FloatStage.name
    takes_init = False

    def recipe(self):  # noqa: ANN201
        return self.cfg.stages.section(FloatStage.name).model_copy(update={"epochs": 1})

    def prepare(self, example: Tensor) -> nn.Module:
        return FloatStage(self.cfg).model()


@pytest.fixture
def finetune() -> Iterator[type[FinetuneStage]]:
    register(FinetuneStage, after=FloatStage.name)
    try:
        yield FinetuneStage
    finally:
        unregister(FinetuneStage.name)


def test_a_stage_added_in_one_place_reaches_every_command(
    finetune, tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert stage_names()[:2] == ["float", "finetune"]
    config = str(tiny_config)
    cfg = load_config(config)
    run_stage(cfg, "float")
    capsys.readouterr()

    assert cli(monkeypatch, "train", "--stage", "finetune", "--config", config) == 0
    assert (cfg.run_dir / "finetune" / "best.pt").is_file()
    assert cli(monkeypatch, "predict", "--stage", "all", "--config", config) == 0
    results = json.loads((cfg.run_dir / "predict.json").read_text())["results"]
    assert list(results) == ["float", "finetune"]  # the quantized stages have no model yet
    assert cli(monkeypatch, "export", "--stage", "finetune", "--config", config) == 0
    assert (cfg.run_dir / "deploy" / "stereonet_finetune.onnx").is_file()

    texture = np.random.default_rng(1).integers(0, 256, (64, 136, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "l.png"), texture[:, 8:])
    cv2.imwrite(str(tmp_path / "r.png"), texture[:, :-8])
    out = tmp_path / "depth"
    assert cli(monkeypatch, "infer", "--stage", "finetune", "--config", config,
               "--imgl", str(tmp_path / "l.png"), "--imgr", str(tmp_path / "r.png"),
               "--baseline", "0.1", "--f", "100", "--save-path", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "finetune"


def test_registering_twice_or_nameless_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register(FloatStage)

    class Nameless(FloatStage):
        name = ""

    with pytest.raises(ValueError, match="has no name"):
        register(Nameless)
