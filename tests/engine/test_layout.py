"""Training-speed settings that must not change results: NHWC convolutions, kept heap memory."""

from __future__ import annotations

import resource
import sys

import pytest
import torch
from torch import nn

from stereoq.engine.allocator import keep_freed_memory
from stereoq.engine.layout import channels_last, contiguous_state
from stereoq.models.build import build_loss, build_model
from stereoq.settings import load_config
from stereoq.stages import get_stage


def test_channels_last_keeps_values_names_and_gradients(tiny_config) -> None:
    cfg = load_config(str(tiny_config))
    torch.manual_seed(0)
    plain = build_model(cfg.model).train()
    fast = channels_last(build_model(cfg.model).train())
    fast.load_state_dict(plain.state_dict())
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert all(m.weight.is_contiguous() for m in fast.modules() if isinstance(m, nn.Conv3d))
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in plain.named_parameters()]

    x = torch.randn(2, 6, 64, 128)
    gt = torch.rand(2, 1, 64, 128) * 40 + 1
    loss_fn = build_loss(cfg.model)
    for model in (plain, fast):
        loss_fn(model(x), gt).backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5), name
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-4)

    state = contiguous_state(fast)
    assert all(v.is_contiguous() for v in state.values())
    assert state.keys() == plain.state_dict().keys()


def test_float_stage_trains_channels_last(tiny_config) -> None:
    cfg = load_config(str(tiny_config))
    model = get_stage(cfg, "float").prepare(torch.zeros(1, 6, 64, 128))
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_freed_activations_are_reused_without_page_faults() -> None:
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    size = 8 << 20  # an 8 MB activation, above glibc's default mmap threshold

    def faults_of_alloc_touch_free() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            torch.empty(size, dtype=torch.uint8).fill_(1)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_alloc_touch_free()  # the heap grows once
    # Returning the block to the kernel after each step would fault in 5 x 2048 pages again.
    assert faults_of_alloc_touch_free() < 500
