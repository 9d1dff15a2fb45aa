"""StereoNet: neck, head and refinement assembled; one 6-channel input (left | right)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stereoq.models.postprocess import StereoNetPostProcess


class StereoNet(nn.Module):
    """Stereo network on a (B, 6, H, W) input: left and right images stacked on channels.

    Training mode returns the five disparities (coarse to full resolution) in pixels; eval mode
    returns the final (B, 1, H, W) disparity in pixels, padding inputs whose size is not a
    multiple of ``size_multiple`` and cropping the result back.
    """

    def __init__(
        self,
        neck: nn.Module,
        head: nn.Module,
        refinement: nn.Module,
        postprocess: StereoNetPostProcess,
        maxdisp: int,
    ) -> None:
        super().__init__()
        self.neck = neck
        self.head = head
        self.refinement = refinement
        self.postprocess = postprocess
        self.maxdisp = maxdisp
        self.size_multiple = int(neck.stride)

    def raw(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 6, H, W) -> normalised outputs: coarse, refined levels, full-resolution offset.

        The neck runs once on the pair stacked along the batch, which keeps one set of weights
        in the exported graph and lets quantizers match each conv once.
        """
        b = x.shape[0]
        left = x[:, :3]
        gwc, cat = self.neck(torch.cat([left, x[:, 3:]], dim=0))
        coarse = self.head(gwc[:b], gwc[b:], cat[:b], cat[b:])
        return (coarse, *self.refinement(coarse, left))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.training:
            return self.postprocess(self.raw(x))
        height, width = x.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        raw = self.raw(x)
        disp = self.postprocess.final(raw[-2], raw[-1])
        return disp[..., :height, :width]


class DeployGraph(nn.Module):
    """The part that is quantized and deployed: (B, 6, H, W) -> (1/2 disparity, offset)."""

    def __init__(self, model: StereoNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raw = self.model.raw(x)
        return raw[-2], raw[-1]
