"""Percentile calibration observer: a histogram whose tails are clipped before scaling.

Part of the PT2E quantization path: import only from quant code (torchao is heavy and noisy).
"""

from __future__ import annotations

import torch
from torch import Tensor

from stereoq.quant.torchao_import import pt2e

MinMaxObserver = pt2e().MinMaxObserver


class PercentileObserver(MinMaxObserver):
    """Per-tensor observer keeping a ``bins``-bin histogram over the running [min, max].

    ``calculate_qparams`` clips both tails so that ``percentile`` % of the observed values lie
    inside the quantization range (99.985 in the reference recipe); 0 always stays inside, so
    ReLU outputs keep their exact zero.
    """

    def __init__(self, percentile: float = 99.985, bins: int = 8192, **kwargs) -> None:
        super().__init__(**kwargs)
        self.percentile = float(percentile)
        self.bins = int(bins)
        self.register_buffer("histogram", torch.zeros(self.bins, dtype=torch.float64))

    def forward(self, x_orig: Tensor) -> Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float().flatten()
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return x_orig
        lo, hi = torch.aminmax(x)
        new_min = torch.minimum(lo, self.min_val)
        new_max = torch.maximum(hi, self.max_val)
        if new_max <= new_min:
            new_max = new_min + 1e-6
        if torch.isfinite(self.min_val) and (new_min < self.min_val or new_max > self.max_val):
            self.histogram.copy_(self._rebin(self.histogram, self.min_val, self.max_val,
                                             new_min, new_max))
        self.min_val.copy_(new_min)
        self.max_val.copy_(new_max)
        self.histogram += torch.histc(x.double(), self.bins, float(new_min), float(new_max))
        return x_orig

    def _rebin(self, hist: Tensor, old_min: Tensor, old_max: Tensor, new_min: Tensor,
               new_max: Tensor) -> Tensor:
        """Move old counts (at their bin centres) into the bins of the wider range."""
        width = (old_max - old_min) / self.bins
        centres = old_min + width * (torch.arange(self.bins, dtype=torch.float64) + 0.5)
        scale = self.bins / (new_max - new_min)
        index = ((centres - new_min) * scale).long().clamp_(0, self.bins - 1)
        return torch.zeros_like(hist).index_add_(0, index, hist)

    def clipped_range(self) -> tuple[Tensor, Tensor]:
        """(low, high) holding ``percentile`` % of the observed values (both tails clipped)."""
        total = self.histogram.sum()
        if total <= 0 or not torch.isfinite(self.min_val):
            return self.min_val, self.max_val
        tail = total * (1.0 - self.percentile / 100.0) / 2.0
        cdf = torch.cumsum(self.histogram, 0)
        width = (self.max_val - self.min_val) / self.bins
        low_bin = int(torch.searchsorted(cdf, tail, right=True))
        high_bin = int(torch.searchsorted(cdf, total - tail, right=False))
        low = self.min_val + width * low_bin
        high = self.min_val + width * min(high_bin + 1, self.bins)
        low = torch.clamp(low, max=0.0).to(self.min_val.dtype)
        high = torch.clamp(high, min=0.0).to(self.max_val.dtype)
        return low, high

    @torch.jit.export
    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        low, high = self.clipped_range()
        return self._calculate_qparams(low, high)

    def extra_repr(self) -> str:
        return f"percentile={self.percentile}, bins={self.bins}, {super().extra_repr()}"
