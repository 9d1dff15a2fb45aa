"""Assemble the configured StereoNet and loss from registered parts."""

from __future__ import annotations

from torch import nn

from stereoq.models.config import ModelConfig
from stereoq.models.stereonet import StereoNet


def build_model(cfg: ModelConfig) -> StereoNet:
    """Assemble the configured StereoNet (float, freshly initialised)."""
    neck_ = cfg.neck.registry.build(cfg.neck.type, **cfg.neck.params())
    head_ = cfg.head.registry.build(
        cfg.head.type,
        num_candidates=cfg.num_candidates,
        gwc_channels=neck_.gwc_channels,
        concat_channels=neck_.concat_channels,
        **cfg.head.params(),
    )
    refinement_ = cfg.refinement.registry.build(
        cfg.refinement.type, levels=cfg.refine_levels, maxdisp=cfg.maxdisp,
        **cfg.refinement.params()
    )
    post = build_postprocess(cfg)
    model = StereoNet(neck_, head_, refinement_, post, cfg.maxdisp, cfg.size_multiple)
    model.built_from = cfg.model_dump_json()
    return model


def build_postprocess(cfg: ModelConfig) -> nn.Module:
    """(1/2-res disparity, offset), normalised -> the disparities in px."""
    return cfg.postprocess.registry.build(
        cfg.postprocess.type, maxdisp=cfg.maxdisp, **cfg.postprocess.params()
    )


def build_loss(cfg: ModelConfig) -> nn.Module:
    """The configured training loss, masking pixels outside 0 < gt < maxdisp."""
    return cfg.loss.registry.build(cfg.loss.type, maxdisp=cfg.maxdisp, **cfg.loss.params())
