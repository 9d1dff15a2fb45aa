"""Convolution building blocks shared by the neck, head and refinement."""

from __future__ import annotations

from torch import Tensor, nn


def conv_bn_relu(
    in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    """2-D conv (no bias) + BN (+ ReLU): the unit ONNX Runtime fuses into one QLinearConv."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def conv3d_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3x3 conv (no bias) + BN3d + ReLU over a (B, C, D, H, W) cost volume."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, 1, padding=1, bias=False),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=False),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity (or 1x1 projection) shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_ch, out_ch, 3, stride)
        self.conv2 = conv_bn_relu(out_ch, out_ch, 3, 1, relu=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = conv_bn_relu(in_ch, out_ch, 1, stride, relu=False)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def make_stage(in_ch: int, out_ch: int, num_blocks: int, stride: int) -> nn.Sequential:
    """``num_blocks`` basic blocks, the first one carrying the stride and channel change."""
    blocks = [BasicBlock(in_ch, out_ch, stride)]
    blocks += [BasicBlock(out_ch, out_ch, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)
