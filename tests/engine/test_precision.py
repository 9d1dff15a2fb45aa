"""Mixed-precision training on CPU: autocast around forward and loss only, exact resume with the
gradient scaler's state, fp16's one-line refusal without CUDA, QAT kept in fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stereoq.engine import loop
from stereoq.engine.checkpoint import load_checkpoint
from stereoq.errors import StereoqError
from stereoq.models.build import build_loss
from stereoq.settings import load_config
from stereoq.stages import run_stage
from stereoq.stages.float_stage import FloatStage

from .test_loop import Interrupt, StopAfter


def tiny(path: Path, *sets: str):
    return load_config(str(path), sets=list(sets))


class AutocastSpy(torch.nn.Module):
    """The loss, recording the autocast state it runs in."""

    def __init__(self, loss: torch.nn.Module, seen: set) -> None:
        super().__init__()
        self.loss, self.seen = loss, seen

    def forward(self, preds, gt):
        self.seen.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.loss(preds, gt)


def test_bf16_autocasts_training_forward_and_loss_not_validation(tiny_config, monkeypatch):
    in_loss: set = set()
    in_validation: set = set()
    monkeypatch.setattr("stereoq.models.build.build_loss",
                        lambda m: AutocastSpy(build_loss(m), in_loss))
    predict = FloatStage.predict

    def spied_predict(self, model, x):
        in_validation.add(torch.is_autocast_enabled("cpu"))
        return predict(self, model, x)

    monkeypatch.setattr(FloatStage, "predict", spied_predict)
    cfg = tiny(tiny_config, "stages.float.precision=bf16")
    summary = run_stage(cfg, "float")
    assert in_loss == {(True, torch.bfloat16)}
    assert in_validation == {False}
    state = load_checkpoint(cfg.run_dir / "float" / "last.pt")
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert state["scaler"] == {}  # bf16 needs no loss scaling
    assert summary["best"]["epe"] > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_resume_equals_uninterrupted(tiny_config, tmp_path, monkeypatch,
                                                     precision):
    # fp16 is refused on CPU; on CPU its autocast and scaler run all the same, so the scaler's
    # checkpointing is tested here with the refusal switched off.
    monkeypatch.setattr(loop, "check_precision", lambda *args: None)
    sets = ["stages.float.epochs=2", f"stages.float.precision={precision}"]
    straight = tiny(tiny_config, *sets, f"output_dir={tmp_path / 'a'}")
    run_stage(straight, "float")
    resumed = tiny(tiny_config, *sets, f"output_dir={tmp_path / 'b'}")
    with pytest.raises(Interrupt):
        run_stage(resumed, "float", reporter=StopAfter(1))
    run_stage(resumed, "float", resume=True)

    a = load_checkpoint(straight.run_dir / "float" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "float" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scaler"] == b["scaler"]
    # fp16 backed off from its initial scale (overflowing steps skipped): state worth restoring
    assert precision == "bf16" or a["scaler"]["scale"] < 2.0**16


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without CUDA")
def test_fp16_without_cuda_is_refused_before_any_work(tiny_config) -> None:
    cfg = tiny(tiny_config, "stages.float.precision=fp16")
    with pytest.raises(StereoqError) as err:
        run_stage(cfg, "float")
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    assert str(err.value).startswith("stages.float.precision: fp16") and "use bf16" in str(
        err.value)
    assert not cfg.run_dir.exists()


@pytest.mark.parametrize(("key", "says"), [("precision=bf16", "QAT trains in fp32 only"),
                                           ("compile=true", "QAT is not compiled")])
def test_qat_refuses_autocast_and_compile_in_its_config(tiny_config, key, says) -> None:
    with pytest.raises(StereoqError, match=f"stages.qat.{key.split('=')[0]}: .*{says}") as err:
        tiny(tiny_config, f"stages.qat.{key}")
    assert err.value.exit_code == 2
