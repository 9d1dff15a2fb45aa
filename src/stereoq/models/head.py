"""StereoNet head: cost volume, 3-D aggregation and soft-argmin disparity regression."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, PositiveInt
from torch import Tensor, nn

from stereoq.models.blocks import conv3d_bn_relu
from stereoq.models.cost_volume import concat_volume, groupwise_correlation
from stereoq.registry import HEADS


class DisparityRegression(nn.Module):
    """Softmax over D candidates and their expectation, in normalised disparity d / D."""

    def __init__(self, num_candidates: int) -> None:
        super().__init__()
        values = torch.arange(num_candidates, dtype=torch.float32) / num_candidates
        self.register_buffer("candidates", values.view(1, num_candidates, 1, 1), persistent=False)

    def forward(self, cost: Tensor) -> Tensor:
        """(B, D, H, W) matching scores -> (B, 1, H, W) disparity in [0, 1)."""
        prob = torch.softmax(cost, dim=1)
        return (prob * self.candidates).sum(dim=1, keepdim=True)


class MatchingScore(nn.Conv3d):
    """(B, C, D, H, W) aggregated cost volume -> (B, 1, D, H, W) matching score per candidate.

    Its own class (not a plain Conv3d) so that quantization tells it from the aggregation
    convolutions: its output feeds the disparity regression.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels, 1, 3, 1, padding=1, bias=False)


@HEADS.register("stereonet_head")
class StereoNetHead(nn.Module):
    """Group-wise correlation + concat volume, Conv3d aggregation, soft-argmin regression."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        num_groups: PositiveInt = 32
        agg_channels: PositiveInt = 32
        agg_layers: PositiveInt = 4

    def __init__(
        self,
        num_candidates: int,
        gwc_channels: int,
        concat_channels: int,
        num_groups: int,
        agg_channels: int,
        agg_layers: int,
    ) -> None:
        super().__init__()
        if gwc_channels % num_groups:
            raise ValueError(
                f"num_groups {num_groups} does not divide the {gwc_channels} feature channels"
            )
        self.num_candidates = num_candidates
        self.num_groups = num_groups
        in_ch = num_groups + 2 * concat_channels
        layers = [conv3d_bn_relu(in_ch, agg_channels)]
        layers += [conv3d_bn_relu(agg_channels, agg_channels) for _ in range(agg_layers)]
        self.aggregation = nn.Sequential(*layers)
        self.score = MatchingScore(agg_channels)
        self.regression = DisparityRegression(num_candidates)

    def forward(self, gwc_l: Tensor, gwc_r: Tensor, cat_l: Tensor, cat_r: Tensor) -> Tensor:
        """Features at 1/s -> (B, 1, H/s, W/s) normalised disparity (pixels / maxdisp)."""
        volume = torch.cat(
            [
                groupwise_correlation(gwc_l, gwc_r, self.num_candidates, self.num_groups),
                concat_volume(cat_l, cat_r, self.num_candidates),
            ],
            dim=1,
        )
        cost = self.score(self.aggregation(volume)).squeeze(1)
        return self.regression(cost)
