"""Optimizer with weight decay on weights only, and the LR schedule by (fractional) epoch."""

from __future__ import annotations

import math

import torch
from torch import nn

from stereoq.settings.stages import OptimizerConfig, SchedulerConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights (decayed) and everything else (BN, biases: not decayed).

    Conv and linear weights are the parameters with more than one dimension; BN scales and
    shifts and biases are vectors. Deciding by shape also works on exported graphs (QAT), whose
    parameters no longer sit inside ``nn.Conv2d`` modules.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.type == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.type == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_at(cfg: SchedulerConfig, base_lr: float, epoch: float, total_epochs: int) -> float:
    """Learning rate at ``epoch`` (fractional: epoch index + fraction of its steps done).

    Linear warmup from 0 over ``warmup_epochs``, then cosine decay to ``min_lr_ratio * base_lr``
    at ``total_epochs``, step decay by ``gamma`` at each milestone epoch, or constant. The loop
    evaluates it at the middle of each step, so the schedule is a function of the epoch alone and
    resumes exactly.
    """
    warmup = cfg.warmup_epochs
    if epoch < warmup:
        return base_lr * epoch / warmup
    if cfg.type == "constant":
        return base_lr
    if cfg.type == "step":
        return base_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    span = max(total_epochs - warmup, 1e-12)
    progress = min(max((epoch - warmup) / span, 0.0), 1.0)
    floor = base_lr * cfg.min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
