"""Parameter and FLOP counts of a model (FLOPs = 2 x multiply-accumulates)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

COUNTED = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class ModuleCost:
    name: str
    params: int
    flops: int


def _layer_flops(module: nn.Module, out: torch.Tensor) -> int:
    """2 x MACs of one conv/linear call: every output element costs (in/groups) x kernel MACs."""
    if isinstance(module, nn.Linear):
        return 2 * out.numel() * module.in_features
    w = module.weight
    per_output = w.shape[1] * math.prod(w.shape[2:])
    if isinstance(module, nn.ConvTranspose2d):
        # Each input element scatters into out_ch/groups x kernel outputs.
        return 2 * out.numel() * (module.in_channels // module.groups) * math.prod(w.shape[2:])
    return 2 * out.numel() * per_output


def count(model: nn.Module, example: torch.Tensor) -> list[ModuleCost]:
    """Costs of each top-level child of ``model`` on one forward of ``example`` (eval mode).

    Counts Conv2d, Conv3d, ConvTranspose2d and Linear; element-wise ops, softmax and resizes
    are not counted (they are a small fraction of this network's work).
    """
    flops: dict[str, int] = {}
    handles = []
    for top_name, top in model.named_children():
        flops[top_name] = 0
        for sub in top.modules():
            if isinstance(sub, COUNTED):

                def hook(mod: nn.Module, _inp: object, out: torch.Tensor, key: str = top_name):
                    flops[key] += _layer_flops(mod, out)

                handles.append(sub.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [
        ModuleCost(name, sum(p.numel() for p in child.parameters()), flops[name])
        for name, child in model.named_children()
    ]


def summary(costs: list[ModuleCost]) -> dict:
    """JSON-ready totals plus the per-module rows."""
    return {
        "flops_definition": "2 x MACs of Conv2d/Conv3d/ConvTranspose2d/Linear",
        "total_params": sum(c.params for c in costs),
        "total_flops": sum(c.flops for c in costs),
        "modules": [asdict(c) for c in costs],
    }
