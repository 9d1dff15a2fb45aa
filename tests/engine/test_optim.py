import pytest
from torch import nn

from stereoq.engine.optim import build_optimizer, lr_at, param_groups
from stereoq.models.build import build_model
from stereoq.settings import load_config
from stereoq.settings.stages import OptimizerConfig, SchedulerConfig


def test_weight_decay_on_conv_weights_only(tiny_config) -> None:
    model = build_model(load_config(str(tiny_config)).model)
    decay, no_decay = param_groups(model, 4e-5)
    decayed = {id(p) for p in decay["params"]}
    conv_weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    norm_params = [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for p in m.parameters()]
    assert conv_weights and norm_params
    assert all(id(p) in decayed for p in conv_weights)
    assert not any(id(p) in decayed for p in norm_params)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (4e-5, 0.0)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    opt = build_optimizer(model, OptimizerConfig(type="adam", lr=1e-3, weight_decay=4e-5))
    assert [g["weight_decay"] for g in opt.param_groups] == [4e-5, 0.0]


def test_cosine_with_warmup_by_epoch() -> None:
    s = SchedulerConfig(type="cosine", warmup_epochs=2, min_lr_ratio=0.1)
    assert lr_at(s, 1.0, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(s, 1.0, 2.0, 10) == pytest.approx(1.0)
    assert lr_at(s, 1.0, 6.0, 10) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_at(s, 1.0, 10.0, 10) == pytest.approx(0.1)


def test_step_and_constant() -> None:
    step = SchedulerConfig(type="step", warmup_epochs=0, milestones=[3, 6], gamma=0.1)
    assert [lr_at(step, 1.0, e, 9) for e in (2.9, 3.0, 6.5)] == pytest.approx([1, 0.1, 0.01])
    const = SchedulerConfig(type="constant", warmup_epochs=1)
    assert lr_at(const, 2.0, 0.25, 5) == pytest.approx(0.5)
    assert lr_at(const, 2.0, 4.0, 5) == 2.0
