"""The adaptation loss: proxy labels + photometric reconstruction + edge-aware smoothness, with
the weights of ``stages.adapt.loss``; no ground truth is read."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from stereoq.losses.photometric import photometric_loss
from stereoq.losses.smoothness import edge_aware_smoothness
from stereoq.models.loss import MultiScaleSmoothL1
from stereoq.settings.stages import LabelFreeLossConfig


class LabelFreeLoss(nn.Module):
    """Loss of a batch ``{"left", "right"}`` (B, 3, H, W) network inputs (``(x - mean) / std``),
    ``"proxy"`` (B, 1, H, W) px, 0 = no label, ``"proxy_fill"`` the unlabelled pixels' nearest
    label to the left, 0 elsewhere (``stereoq.stages.unlabeled``).

    ``proxy_loss``: the model's ground-truth loss (all outputs), here against the proxy labels
    and, weighted by ``proxy_fill``, against the filled ones: occluded and textureless pixels
    lean to the background side, as SGBM's own hole filling does, where the photometric term
    is silent (occlusions) or flat (no texture). The photometric and smoothness terms see the
    full-resolution output only.
    """

    def __init__(self, weights: LabelFreeLossConfig, proxy_loss: nn.Module, maxdisp: float,
                 mean: float, std: float) -> None:
        super().__init__()
        self.weights = weights
        self.proxy_loss = proxy_loss
        self.final_proxy_loss = MultiScaleSmoothL1(maxdisp, [1.0], beta=1.0)
        self.mean, self.std = mean, std

    def unit_range(self, image: Tensor) -> Tensor:
        """Network input -> [0, 1] (the photometric constants assume that range)."""
        return (image * self.std + self.mean) / 255.0

    def forward(self, outputs: Sequence[Tensor], batch: dict[str, Tensor]) -> Tensor:
        """Training: five (B, 1, h_i, w_i) disparities in px, coarse to full resolution."""
        w = self.weights
        total = self._unsupervised(outputs[-1], batch)
        if w.proxy:
            total = total + w.proxy * self.proxy_loss(outputs, batch["proxy"])
        if w.proxy_fill:
            total = total + w.proxy_fill * self.proxy_loss(outputs, batch["proxy_fill"])
        return total

    def final(self, pred: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Validation: the (B, 1, H, W) px prediction alone, every term on it."""
        w = self.weights
        total = self._unsupervised(pred, batch)
        if w.proxy:
            total = total + w.proxy * self.final_proxy_loss([pred], batch["proxy"])
        if w.proxy_fill:
            total = total + w.proxy_fill * self.final_proxy_loss([pred], batch["proxy_fill"])
        return total

    def _unsupervised(self, disp: Tensor, batch: dict[str, Tensor]) -> Tensor:
        w = self.weights
        left = self.unit_range(batch["left"])
        total = disp.new_zeros(())
        if w.photometric:
            right = self.unit_range(batch["right"])
            total = total + w.photometric * photometric_loss(left, right, disp, w.ssim)
        if w.smoothness:
            total = total + w.smoothness * edge_aware_smoothness(disp, left)
        return total
