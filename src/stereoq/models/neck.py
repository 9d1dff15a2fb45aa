"""StereoNet feature neck: a ResNet-style tower shared by the left and right images."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import Tensor, nn

from stereoq.models.blocks import conv_bn_relu, make_stage
from stereoq.registry import NECKS


@NECKS.register("stereonet_neck")
class StereoNetNeck(nn.Module):
    """Features at 1/``stride`` resolution for the group-wise correlation and concat cost
    volumes.

    ``out_channels`` = [stem, stage1 (1/4), stage2 (1/8), stage3 (1/16), stage4 (1/16),
    concat features]; the correlation features are stages 3 and 4 concatenated. With
    ``stride: 8`` stage 3 keeps stage 2's resolution (StereoNet's 8x variant): twice the
    candidates per pixel of disparity and one refinement level less; with ``stride: 4`` stages
    2 and 3 keep stage 1's (four times the candidates, two levels less).
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        out_channels: list[PositiveInt] = Field(
            default=[32, 32, 64, 128, 128, 16], min_length=6, max_length=6
        )
        num_blocks: list[PositiveInt] = Field(default=[3, 16, 3, 3], min_length=4, max_length=4)
        stride: Literal[4, 8, 16] = 16
        """Total stride of the features: the cost volume's resolution is 1/stride."""

    def __init__(self, out_channels: list[int], num_blocks: list[int], stride: int = 16) -> None:
        super().__init__()
        c = out_channels
        self.stem = nn.Sequential(
            conv_bn_relu(3, c[0], 3, 2), conv_bn_relu(c[0], c[0]), conv_bn_relu(c[0], c[0])
        )
        self.stage1 = make_stage(c[0], c[1], num_blocks[0], 2)
        self.stage2 = make_stage(c[1], c[2], num_blocks[1], 1 if stride == 4 else 2)
        self.stage3 = make_stage(c[2], c[3], num_blocks[2], 2 if stride == 16 else 1)
        self.stage4 = make_stage(c[3], c[4], num_blocks[3], 1)
        self.gwc_channels = c[3] + c[4]
        self.concat_channels = c[5]
        self.concat_feature = nn.Sequential(
            conv_bn_relu(self.gwc_channels, c[4], 3),
            nn.Conv2d(c[4], c[5], 1, bias=False),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> correlation features (N, C3+C4, H/s, W/s), concat (N, C5, ...)."""
        s3 = self.stage3(self.stage2(self.stage1(self.stem(x))))
        s4 = self.stage4(s3)
        gwc = torch.cat([s3, s4], dim=1)
        return gwc, self.concat_feature(gwc)
