"""The training loop: learning, exact resume, NaN guard, stage registration, DDP."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stereoq.engine import loop
from stereoq.engine.checkpoint import load_checkpoint, save_checkpoint
from stereoq.engine.evaluate import pair_input
from stereoq.engine.report import Reporter
from stereoq.errors import StereoqError
from stereoq.models.build import build_loss, build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage, run_stage


def tiny(path: Path, *sets: str):
    return load_config(str(path), sets=list(sets))


def test_short_run_lowers_loss_on_fixed_batch(tiny_config) -> None:
    cfg = tiny(tiny_config, "data.synthetic.train_count=4", "stages.float.epochs=4")
    from stereoq.data import build_dataset

    fixed = [build_dataset(cfg.data, "train", crop=False)[i] for i in range(2)]
    x = pair_input({k: torch.stack([s[k] for s in fixed]) for k in ("left", "right")})
    gt = torch.stack([s["disp"] for s in fixed])
    loss_fn = build_loss(cfg.model)

    def loss_of(state: dict | None) -> float:
        torch.manual_seed(cfg.seed)  # the loop's initial weights
        model = build_model(cfg.model)
        if state is not None:
            model.load_state_dict(state)
        with torch.no_grad():
            return loss_fn(model.train()(x), gt).item()

    summary = run_stage(cfg, "float")
    trained = load_checkpoint(cfg.run_dir / "float" / "last.pt")["model"]
    assert loss_of(trained) < 0.8 * loss_of(None)
    assert summary["best_epoch"] >= 1 and summary["best"]["images"] == 4
    lines = (cfg.run_dir / "float" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4


class Interrupt(Exception):
    pass


class StopAfter(Reporter):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def epoch(self, record: dict) -> None:
        if record["epoch"] == self.epochs:
            raise Interrupt


def test_resume_equals_uninterrupted(tiny_config, tmp_path) -> None:
    sets = ["stages.float.epochs=3", "stages.float.scheduler.warmup_epochs=1"]
    straight = tiny(tiny_config, *sets, f"output_dir={tmp_path / 'a'}")
    run_stage(straight, "float")

    resumed = tiny(tiny_config, *sets, f"output_dir={tmp_path / 'b'}")
    with pytest.raises(Interrupt):
        run_stage(resumed, "float", reporter=StopAfter(2))
    assert load_checkpoint(resumed.run_dir / "float" / "last.pt")["epoch"] == 2
    run_stage(resumed, "float", resume=True)

    a = load_checkpoint(straight.run_dir / "float" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "float" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["best_epe"] == b["best_epe"]
    log = (resumed.run_dir / "float" / "log.jsonl").read_text().splitlines()
    assert len(log) == 3  # the interrupted run's lines are kept, none doubled


class Notes(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


TORN = '{"epoch": 3, "lr": 0.0001, "train_lo'
"""What a kill during the append of epoch 3's record leaves: no newline, not JSON."""


def test_resume_drops_a_torn_last_log_line(tiny_config) -> None:
    cfg = tiny(tiny_config, "stages.float.epochs=3", "data.synthetic.train_count=4")
    with pytest.raises(Interrupt):
        run_stage(cfg, "float", reporter=StopAfter(2))
    log = cfg.run_dir / "float" / "log.jsonl"
    with log.open("a") as f:
        f.write(TORN)
    notes = Notes()
    run_stage(cfg, "float", resume=True, reporter=notes)
    lines = log.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert [n for n in notes.notes if n.startswith("dropped")] == [
        f"dropped the torn last line of {log} (an interrupted write)"
    ]


def test_fresh_run_replaces_a_log_with_a_torn_last_line(tiny_config) -> None:
    cfg = tiny(tiny_config, "data.synthetic.train_count=4")
    log = cfg.run_dir / "float" / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text('{"epoch": 1, "lr": 0.1}\n' + TORN)
    run_stage(cfg, "float")
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1]


def test_a_run_is_never_replaced_without_overwrite(tiny_config) -> None:
    cfg = tiny(tiny_config, "data.synthetic.train_count=4", "stages.float.epochs=2")
    with pytest.raises(Interrupt):
        run_stage(cfg, "float", reporter=StopAfter(1))
    folder = cfg.run_dir / "float"
    before = {name: (folder / name).read_bytes() for name in ("last.pt", "best.pt", "log.jsonl")}

    with pytest.raises(StereoqError) as err:
        run_stage(cfg, "float")
    assert err.value.exit_code == 2
    assert str(err.value) == (f"{folder} already holds a float run (last.pt after epoch 1); "
                              "continue it with --resume, or replace it with --overwrite")
    assert {name: (folder / name).read_bytes() for name in before} == before
    with pytest.raises(StereoqError, match="--overwrite: not with --resume"):
        run_stage(cfg, "float", resume=True, overwrite=True)

    notes = Notes()
    summary = run_stage(cfg, "float", overwrite=True, reporter=notes)
    assert f"replaced the earlier run in {folder} (last.pt, best.pt)" in notes.notes
    assert [json.loads(line)["epoch"] for line in (folder / "log.jsonl").read_text().splitlines()
            ] == [1, 2]
    assert load_checkpoint(folder / "last.pt")["epoch"] == summary["epochs"] == 2


def test_a_finished_run_resumes_to_nothing(tiny_config) -> None:
    cfg = tiny(tiny_config, "data.synthetic.train_count=4")
    first = run_stage(cfg, "float")
    folder = cfg.run_dir / "float"
    kept = {name: (folder / name).read_bytes() for name in ("last.pt", "best.pt", "log.jsonl")}
    again = run_stage(cfg, "float", resume=True)
    assert again["best"] == first["best"] and again["best_epoch"] == first["best_epoch"]
    assert {name: (folder / name).read_bytes() for name in kept} == kept


def test_keep_log_drops_only_a_torn_last_line_and_refuses_corruption(tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    good = ['{"epoch": 1}', '{"epoch": 2}', '{"epoch": 3}']
    log.write_text("\n".join(good) + "\n" + TORN)
    assert loop.keep_log(log, 2) is True
    assert log.read_text() == "\n".join(good[:2]) + "\n"
    assert loop.keep_log(log, 2) is False
    loop.append_log(log, {"epoch": 3})
    assert log.read_text().splitlines() == good

    log.write_text(good[0] + "\n" + TORN + "\n" + good[1] + "\n")
    with pytest.raises(StereoqError) as err:
        loop.keep_log(log, 2)
    assert str(err.value) == (f"training log {log} line 2 is corrupt (JSONDecodeError); "
                              "repair or delete that line and run again")
    log.write_text(good[0] + "\n" + TORN + "\n")  # a newline after it: not an interrupted write
    with pytest.raises(StereoqError, match="line 2 is corrupt"):
        loop.keep_log(log, 2)


def test_resume_without_checkpoint_is_a_clear_error(tiny_config) -> None:
    with pytest.raises(StereoqError, match=r"last.pt does not exist: nothing to resume"):
        run_stage(tiny(tiny_config), "float", resume=True)


def test_resume_with_another_optimizer_state_is_one_line(tiny_config) -> None:
    cfg = tiny(tiny_config)
    torch.manual_seed(cfg.seed)
    last = save_checkpoint(cfg.run_dir / "float" / "last.pt", {
        "model": build_model(cfg.model).state_dict(),
        "optimizer": torch.optim.Adam([torch.zeros(1)]).state_dict(),
    })
    with pytest.raises(StereoqError) as err:
        run_stage(cfg, "float", resume=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {last}: its optimizer state does not fit")
    assert message.endswith("train without --resume")


def test_another_kind_of_optimizer_is_refused_before_its_first_step() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    adam = torch.optim.Adam(params).state_dict()
    with pytest.raises(ValueError, match="another optimizer: it lacks dampening, momentum"):
        loop.check_optimizer_kind(torch.optim.SGD(params, lr=0.1), adam)
    loop.check_optimizer_kind(torch.optim.Adam(params), adam)
    # a hyper-parameter a newer PyTorch added is not another optimizer
    older = {**adam, "param_groups": [
        {k: v for k, v in g.items() if k != "amsgrad"} for g in adam["param_groups"]]}
    loop.check_optimizer_kind(torch.optim.Adam(params), older)


class NanAfter(torch.nn.Module):
    """The real loss for ``good`` calls, then NaN."""

    def __init__(self, loss: torch.nn.Module, good: int) -> None:
        super().__init__()
        self.loss, self.good, self.calls = loss, good, 0

    def forward(self, preds, gt):
        self.calls += 1
        value = self.loss(preds, gt)
        return value if self.calls <= self.good else value * float("nan")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_config, monkeypatch) -> None:
    cfg = tiny(tiny_config, "stages.float.epochs=3")
    # the default Stage.criterion builds the config's loss through stereoq.models.build
    monkeypatch.setattr("stereoq.models.build.build_loss",
                        lambda m: NanAfter(build_loss(m), good=5))
    with pytest.raises(StereoqError, match=r"loss became nan at epoch 2 step 2.*last good"):
        run_stage(cfg, "float")
    state = load_checkpoint(cfg.run_dir / "float" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_rank0_alone_writes(tiny_config, tmp_path) -> None:
    """Two gloo processes as torchrun would start them, each in its own working directory with
    a relative output_dir: files may appear only in rank 0's."""
    port = str(free_port())
    procs = []
    for rank in range(2):
        cwd = tmp_path / f"rank{rank}"
        cwd.mkdir()
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "stereoq", "train", "--config", str(tiny_config),
               "--set", "output_dir=runs", "--epochs", "2"]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    run0 = tmp_path / "rank0" / "runs" / "tiny" / "float"
    assert {p.name for p in run0.iterdir() if not p.name.startswith("events.")} == {
        "last.pt", "best.pt", "log.jsonl", "metrics.json"}  # events: TensorBoard's, if installed
    assert not (tmp_path / "rank1" / "runs").exists()
    assert "epoch 2" in outs[0][0] and outs[1][0].strip() == ""
    import json

    summary = json.loads((run0 / "metrics.json").read_text())
    # 4 validation images, 2 per process, reduced across processes
    assert summary["processes"] == 2 and summary["best"]["images"] == 4
    assert not math.isnan(summary["best"]["epe"])


def test_init_from_loads_weights_only(tiny_config, tmp_path) -> None:
    cfg = tiny(tiny_config, "data.synthetic.train_count=2", "data.synthetic.val_count=1",
               "stages.float.epochs=1", "stages.float.optimizer.lr=1e-12")
    torch.manual_seed(123)  # other weights than the loop's seeded initialisation
    start = build_model(cfg.model).state_dict()
    source = save_checkpoint(tmp_path / "sceneflow.pt", {
        "model": start, "epoch": 7, "optimizer": {"state": {}, "param_groups": []}})
    run_stage(cfg, "float", init_from=source)
    last = load_checkpoint(cfg.run_dir / "float" / "last.pt")
    assert last["epoch"] == 1  # a new schedule, not epoch 8
    weights = [k for k, v in start.items() if v.dtype.is_floating_point and k.endswith("weight")]
    assert weights
    for key in weights:
        torch.testing.assert_close(last["model"][key].contiguous(), start[key], atol=1e-6,
                                   rtol=0)


def test_init_from_another_model_or_stage_is_one_line(tiny_config, tmp_path) -> None:
    cfg = tiny(tiny_config)
    other = tiny(tiny_config, "model.neck.out_channels=[8,8,8,16,16,16]")
    path = save_checkpoint(tmp_path / "other.pt", {"model": build_model(other.model).state_dict()})
    with pytest.raises(StereoqError) as err:
        run_stage(cfg, "float", init_from=path)
    message = str(err.value)
    assert "\n" not in message and f"checkpoint {path} holds another model" in message
    assert "in the checkpoint but" in message and "--init-from" in message
    with pytest.raises(StereoqError, match="not with --resume"):
        run_stage(cfg, "float", resume=True, init_from=path)
    with pytest.raises(StereoqError, match="stage qat does not take initial weights"):
        loop.check_init_from(get_stage(cfg, "qat"), path, False)
    with pytest.raises(StereoqError, match="no such file"):
        run_stage(cfg, "float", init_from=tmp_path / "none.pt")


def test_compile_trains_and_saves_the_plain_models_keys(tiny_config, monkeypatch) -> None:
    """Inductor takes minutes to compile on 2 CPU cores: aot_eager traces the same graph (the
    training forward through dynamo and AOT autograd) without generating code."""
    compiled = []
    real_compile = torch.compile

    def compile_(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_)
    cfg = tiny(tiny_config, "stages.float.compile=true", "data.synthetic.train_count=4",
               "data.synthetic.val_count=1")
    run_stage(cfg, "float")
    assert len(compiled) == 1
    plain = build_model(cfg.model)
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(cfg.run_dir / "float" / name)["model"]
        assert list(state) == list(plain.state_dict())  # no "_orig_mod." prefix
        plain.load_state_dict(state)


def test_loader_options_pin_memory_only_for_cuda_and_worker_options_only_with_workers(
    tiny_config,
) -> None:
    cfg = tiny(tiny_config)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert loop.loader_options(cfg.data, cpu) == {"num_workers": 0, "pin_memory": False}
    assert loop.loader_options(cfg.data, cuda) == {"num_workers": 0, "pin_memory": True}
    workers = tiny(tiny_config, "data.num_workers=2", "data.persistent_workers=true",
                   "data.prefetch_factor=4", "data.pin_memory=false")
    assert loop.loader_options(workers.data, cuda) == {
        "num_workers": 2, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 4}
    with pytest.raises(StereoqError, match="data: persistent_workers needs num_workers > 0"):
        tiny(tiny_config, "data.persistent_workers=true")


@pytest.mark.parametrize(("scores", "best"), [([1.0, 2.0, 3.0], 0), ([1.0, 2.0, 0.5], 2)])
def test_a_stage_that_validates_its_start_hands_it_on_unless_an_epoch_beats_it(
    tiny_config, monkeypatch, scores: list[float], best: int
) -> None:
    from stereoq.stages.float_stage import FloatStage

    monkeypatch.setattr(FloatStage, "validates_start", True)
    scripted = iter(scores)  # the start's val EPE, then each epoch's

    def validate(run, epoch, ctx, report) -> dict:
        return {"epe": next(scripted), "images": 4}

    monkeypatch.setattr(loop, "_validate", validate)
    prepared: dict = {}
    prepare = FloatStage.prepare

    def keep_start(self, example):
        model = prepare(self, example)
        prepared.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(FloatStage, "prepare", keep_start)
    cfg = tiny(tiny_config, "stages.float.epochs=2", "stages.float.scheduler.warmup_epochs=0")
    notes = Notes()
    summary = run_stage(cfg, "float", reporter=notes)
    assert summary["best_epoch"] == best and summary["start"]["epe"] == 1.0
    saved = load_checkpoint(cfg.run_dir / "float" / "best.pt")
    assert saved["epoch"] == best
    last = load_checkpoint(cfg.run_dir / "float" / "last.pt")["model"]
    assert all(torch.equal(v, saved["model"][k]) for k, v in prepared.items()) == (best == 0)
    assert all(torch.equal(v, saved["model"][k]) for k, v in last.items()) == (best == 2)
    assert any("best.pt is the model the stage started from" in n for n in notes.notes) == (
        best == 0)
