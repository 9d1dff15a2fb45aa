"""StereoNet: neck, head and refinement assembled; one 6-channel input (left | right)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stereoq.models.padding import padded_size, run_padded
from stereoq.models.postprocess import StereoNetPostProcess


class StereoNet(nn.Module):
    """Stereo network on a (B, 6, H, W) input: left and right images stacked on channels.

    Training mode returns the five disparities (coarse to full resolution) in pixels; eval mode
    returns the final (B, 1, H, W) disparity in pixels for any H, W >= 1: inputs are padded to a
    multiple of ``size_multiple`` and to at least ``min_size``, and the result is cropped back.
    """

    def __init__(
        self,
        neck: nn.Module,
        head: nn.Module,
        refinement: nn.Module,
        postprocess: StereoNetPostProcess,
        maxdisp: int,
        size_multiple: int,
    ) -> None:
        super().__init__()
        self.neck = neck
        self.head = head
        self.refinement = refinement
        self.postprocess = postprocess
        self.maxdisp = maxdisp
        self.size_multiple = size_multiple
        # The cost volume shifts the 1/stride features by up to num_candidates - 1 columns;
        # narrower features cannot hold the largest shift.
        self.min_size = (self.size_multiple, self.size_multiple * max(1, head.num_candidates - 1))
        # The model config it was built from (``build_model``), as JSON: two models with the
        # same one have the same graph, whatever their weights (``stereoq.quant.prepare``).
        self.built_from: str | None = None

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
        size = padded_size(*x.shape[-2:], self.size_multiple, self.min_size)
        return run_padded(self._final, x, size)

    def _final(self, x: Tensor) -> Tensor:
        raw = self.raw(x)
        return self.postprocess.final(raw[-2], raw[-1])


class DeployGraph(nn.Module):
    """The part that is quantized and deployed: (B, 6, H, W) -> (1/2 disparity, offset)."""

    def __init__(self, model: StereoNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raw = self.model.raw(x)
        return raw[-2], raw[-1]
