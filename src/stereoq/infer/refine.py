"""Photometric sub-pixel refinement: a network's disparity corrected by matching the pair again.

StereoNet matches at 1/4 or 1/8 resolution and upsamples with refinement that sees only the
left image, so on textured surfaces its disparity is often off by a pixel or two that
full-resolution matching would find, and near depth edges by more. This step tries offsets
around the network's disparity, per pixel, up to ``span_pct`` % of the image width either way
(the network's errors in px grow with the image). It costs each offset by the census codes
of the left pixel and of the right pixel it lands on (robust to gain and gamma differences
between the views) mixed with truncated luma and horizontal-gradient differences of the right
view warped there, aggregates the cost with a guided filter steered by the left image
(edge-aware: windows do not average across intensity edges), and takes the cheapest offset
with a parabola through its neighbours for sub-pixel precision. A pixel keeps the network's
value when its cheapest offset is at the end of the range (the match lies outside it: no
evidence) or when the network's own disparity says the right camera cannot see it (occluded:
there is nothing to match).

Near depth edges the network's error is larger than any span: its low-resolution cost volume
spreads the nearer surface over the farther one (or the reverse) by several pixels. There the
right answer is usually a disparity the network gives a little way off, on the other side of
the edge, so each pixel also tries the same offsets around the nearest and the farthest
disparity within ``edge_window_pct`` % of the image width, and takes one of those when it
matches better by more than ``distance_cost`` for each span of distance from the network's own
value (on a surface the network is right, and more candidates alone would let noise win).

It runs on the network's input, (B, 6, H, W) as ``stereoq.data.transforms.prepare_pair`` makes
it, so it follows any predictor: float, int8 or deployed. Not learned: no weights, no training.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stereoq.data.color import Y_COEFFS
from stereoq.engine.regions import occluded
from stereoq.settings.data import DataConfig
from stereoq.settings.refine import RefineConfig

AD_TRUNCATION = 7.0 / 255.0
"""Luma differences above this (of full scale) cost the same: outliers do not dominate."""
GRADIENT_TRUNCATION = 2.0 / 255.0
"""The same for horizontal gradients (Sobel / 8, of full scale)."""
GRADIENT_SHARE = 0.9
"""Of the non-census cost: the gradient's share (the rest is the luma difference)."""

Predictor = Callable[[Tensor], Tensor]


def luma(images: Tensor, data: DataConfig) -> Tensor:
    """(B, 3, H, W) network-normalised images -> (B, 1, H, W) luma in [0, 1]."""
    raw = images * data.std + data.mean
    if data.color == "yuv444":
        y = raw[:, :1]
    else:
        weights = torch.tensor(Y_COEFFS, dtype=raw.dtype, device=raw.device).view(1, 3, 1, 1)
        y = (raw * weights).sum(dim=1, keepdim=True)
    return y / 255.0


def census_bits(radius: int) -> int:
    """Bits of a census code over a (2 radius + 1)^2 window: one per neighbour."""
    return (2 * radius + 1) ** 2 - 1


def census(gray: Tensor, radius: int) -> Tensor:
    """(B, 1, H, W) -> (B, 1, H, W) integer census codes: bit i set when neighbour i of the
    (2 radius + 1)^2 window is darker than the centre (borders replicated). int32 while the
    bits fit (radius <= 2: half the memory traffic of int64, about 1.6x faster to compare),
    int64 above (radius 3: 48 bits)."""
    height, width = gray.shape[-2:]
    dtype = torch.int32 if census_bits(radius) <= 31 else torch.int64
    padded = F.pad(gray, (radius,) * 4, mode="replicate")
    code = torch.zeros(gray.shape, dtype=dtype, device=gray.device)
    neighbours = [(dy, dx) for dy in range(-radius, radius + 1)
                  for dx in range(-radius, radius + 1) if dy or dx]
    for bit, (dy, dx) in enumerate(neighbours):
        darker = padded[..., radius + dy: radius + dy + height, radius + dx: radius + dx + width]
        code |= (darker < gray).to(dtype) << bit
    return code


_POPCOUNT_12 = torch.tensor([bin(v).count("1") for v in range(4096)], dtype=torch.float32)
"""Set bits of every 12-bit number: a popcount in a few table lookups."""


def popcount(codes: Tensor, bits: int) -> Tensor:
    """Set bits of each integer of ``codes`` (non-negative, below 2**bits), float32."""
    table = _POPCOUNT_12.to(codes.device)
    count = table[codes & 0xFFF]
    for shift in range(12, bits, 12):
        count += table[(codes >> shift) & 0xFFF]
    return count


def box(x: Tensor, radius: int) -> Tensor:
    """Mean over the (2 radius + 1)^2 window of each pixel of (B, C, H, W), borders replicated.

    On the CPU, OpenCV's running-sum box filter (about 15x faster there than torch's pooling);
    elsewhere separable average pooling. The two agree to float32 rounding.
    """
    size = 2 * radius + 1
    if x.device.type == "cpu" and x.dtype == torch.float32:
        planes = x.detach().contiguous().numpy().reshape(-1, *x.shape[-2:])
        out = np.empty_like(planes)
        for i, plane in enumerate(planes):
            cv2.boxFilter(plane, -1, (size, size), dst=out[i], borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(out.reshape(x.shape))
    rows = F.avg_pool2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), (1, size), stride=1)
    return F.avg_pool2d(F.pad(rows, (0, 0, radius, radius), mode="replicate"), (size, 1),
                        stride=1)


class GuidedFilter:
    """He et al.'s guided filter with a fixed grey guide (B, 1, H, W): edge-preserving
    smoothing of any (B, C, H, W) input, its window statistics computed once."""

    def __init__(self, guide: Tensor, radius: int, eps: float) -> None:
        self.guide, self.radius = guide, radius
        self.mean_i = box(guide, radius)
        self.var_i = box(guide * guide, radius) - self.mean_i**2 + eps

    def __call__(self, p: Tensor) -> Tensor:
        mean_p = box(p, self.radius)
        a = (box(self.guide * p, self.radius) - self.mean_i * mean_p) / self.var_i
        b = mean_p - a * self.mean_i
        return box(a, self.radius) * self.guide + box(b, self.radius)


def gradient_x(gray: Tensor) -> Tensor:
    """(B, 1, H, W) horizontal Sobel derivative / 8 (a unit step gives 0.5 at each side)."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                          dtype=gray.dtype, device=gray.device).view(1, 1, 3, 3) / 8.0
    return F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernel)


def sample_rows(views: Tensor, column: Tensor) -> Tensor:
    """(B, C, H, W) views sampled along each row at ``column`` (B, 1, H, W) px, linearly
    between the two nearest pixels, clamped to the image (its border values outside).

    The right view at x - d, as ``grid_sample`` (bilinear, border, align_corners) gives it to
    float32 rounding, but a warp that never leaves its row needs no 2-D grid: at 741x500 on one
    thread building that grid took 5 ms a cost plane and the sampling 1.5, this 2.4 in all.
    """
    width, channels = views.shape[-1], views.shape[1]
    column = column.clamp(0, width - 1)
    start = column.floor()
    frac = column - start
    left = start.long()
    right = (left + 1).clamp(max=width - 1)
    at_left = views.gather(-1, left.expand(-1, channels, -1, -1))
    at_right = views.gather(-1, right.expand(-1, channels, -1, -1))
    return at_left + frac * (at_right - at_left)


def offsets(cfg: RefineConfig, width: int) -> list[float]:
    """The offsets tried on an image ``width`` px wide, px: ``2 steps + 1`` evenly spaced from
    ``-span_px`` to ``+span_px`` (0 included)."""
    step = cfg.span_px(width) / cfg.steps
    return [k * step for k in range(-cfg.steps, cfg.steps + 1)]


class Matcher:
    """The matching cost of a pair of luma views (B, 1, H, W) at any per-pixel disparity, with
    what does not depend on the disparity (census codes, gradients, the guided filter's window
    statistics) computed once."""

    def __init__(self, left: Tensor, right: Tensor, cfg: RefineConfig) -> None:
        self.cfg, self.left, self.width = cfg, left, left.shape[-1]
        self.bits = census_bits(cfg.census_radius)
        self.code_left = census(left, cfg.census_radius)
        self.code_right = census(right, cfg.census_radius)
        self.grad_left = gradient_x(left)
        self.views = torch.cat([right, gradient_x(right)], dim=1)
        self.aggregate = GuidedFilter(left, cfg.radius, cfg.eps)

    def cost(self, disp: Tensor) -> Tensor:
        """(B, 1, H, W) aggregated cost of matching each left pixel at ``disp`` (px).

        The census term compares the left pixel's code with the right code at the nearest whole
        pixel (census matching as SGBM-style matchers do it); the luma and gradient terms sample
        the right view linearly along the row, so the cost varies smoothly with sub-pixel
        disparities.
        """
        cfg, width = self.cfg, self.width
        column = torch.arange(width, dtype=disp.dtype, device=disp.device) - disp
        right_w, grad_right_w = sample_rows(self.views, column).split(1, dim=1)
        nearest = column.round().clamp(0, width - 1).long()
        census_cost = popcount(self.code_right.gather(-1, nearest) ^ self.code_left,
                               self.bits) / self.bits
        ad = (self.left - right_w).abs().clamp(max=AD_TRUNCATION) / AD_TRUNCATION
        grad = (self.grad_left - grad_right_w).abs().clamp(max=GRADIENT_TRUNCATION)
        local = (1.0 - GRADIENT_SHARE) * ad + GRADIENT_SHARE * grad / GRADIENT_TRUNCATION
        return self.aggregate(cfg.census_weight * census_cost + (1.0 - cfg.census_weight) * local)

    def costs(self, base: Tensor) -> Tensor:
        """(B, K, H, W): :meth:`cost` at each offset of ``offsets(cfg, W)`` around ``base``.
        One offset at a time: on a CPU, image-sized planes stay in cache (all K at once
        measured 1.7x slower at 741x500)."""
        return torch.cat([self.cost(base + offset) for offset in offsets(self.cfg, self.width)],
                         dim=1)

    def search(self, base: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The best disparity within the span around ``base`` (B, 1, H, W) px, where it is
        trustworthy (its minimum not at an end of the range), and its cost there."""
        span = self.cfg.span_px(self.width)
        cost = self.costs(base)
        delta, trusted, lowest = best_offset(cost, span / self.cfg.steps, span)
        return base + delta, trusted, lowest


def window_extremes(disp: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """The smallest and the largest of ``disp`` (B, 1, H, W) within (2 radius + 1)^2 of each
    pixel (borders replicated): the farthest and the nearest surface close by.

    On the CPU, OpenCV's erosion and dilation (both 3.3 ms at 741x500 and a 31 px window, one
    thread, where the pooling path took 112 ms in float64); elsewhere separable max pooling.
    The two give the same values.
    """
    size = 2 * radius + 1
    if disp.device.type == "cpu" and disp.dtype == torch.float32:
        planes = disp.detach().contiguous().numpy().reshape(-1, *disp.shape[-2:])
        kernel = np.ones((size, size), np.uint8)
        low, high = np.empty_like(planes), np.empty_like(planes)
        for i, plane in enumerate(planes):
            cv2.erode(plane, kernel, dst=low[i], borderType=cv2.BORDER_REPLICATE)
            cv2.dilate(plane, kernel, dst=high[i], borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(low.reshape(disp.shape)), torch.from_numpy(high.reshape(disp.shape))

    def largest(x: Tensor) -> Tensor:  # separable: a square window costs 2 size, not size^2
        rows = F.max_pool2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), (1, size),
                            stride=1)
        return F.max_pool2d(F.pad(rows, (0, 0, radius, radius), mode="replicate"), (size, 1),
                            stride=1)

    return -largest(-disp), largest(disp)


def best_offset(cost: Tensor, step_px: float, span_px: float) -> tuple[Tensor, Tensor, Tensor]:
    """From (B, K, H, W) costs of offsets ``-span_px .. span_px`` (``step_px`` apart): the
    sub-pixel offset of the minimum (B, 1, H, W) px, where it is trustworthy (not at either
    end of the range), and the minimum cost."""
    count = cost.shape[1]
    # The first minimum, as argmin gives it, one offset at a time: argmin across the channels
    # took 63 of the 390 ms of a 741x500 refinement on 2 cores (torch profiler).
    best, k = cost[:, :1], torch.zeros_like(cost[:, :1], dtype=torch.long)
    for index in range(1, count):
        lower = cost[:, index: index + 1] < best
        best = torch.where(lower, cost[:, index: index + 1], best)
        k = torch.where(lower, index, k)
    inner = (k > 0) & (k < count - 1)
    kc = k.clamp(1, count - 2)
    c0, c1, c2 = (cost.gather(1, kc + s) for s in (-1, 0, 1))
    curvature = c0 - 2.0 * c1 + c2
    vertex = torch.where(curvature > 1e-9, 0.5 * (c0 - c2) / curvature.clamp(min=1e-9),
                         torch.zeros_like(c1)).clamp(-0.5, 0.5)
    return (kc.to(cost.dtype) + vertex) * step_px - span_px, inner, best


def refine(pair: Tensor, disp: Tensor, data: DataConfig, cfg: RefineConfig) -> Tensor:
    """Refined disparity (B, 1, H, W) px from the network input ``pair`` (B, 6, H, W) and its
    disparity ``disp`` (B, 1, H, W) px."""
    if disp.shape[-2:] != pair.shape[-2:]:
        raise ValueError(f"disparity {tuple(disp.shape)} and pair {tuple(pair.shape)} differ")
    with torch.no_grad():
        disp = disp.float()
        left, right = luma(pair[:, :3].float(), data), luma(pair[:, 3:].float(), data)
        width = pair.shape[-1]
        matcher = Matcher(left, right, cfg)
        best, trusted, cost = matcher.search(disp)
        window = round(cfg.edge_window_pct / 100.0 * width)
        if window > 0:
            span = cfg.span_px(width)
            for base in window_extremes(disp, window):
                other, other_trusted, other_cost = matcher.search(base)
                penalised = other_cost + cfg.distance_cost * (other - disp).abs() / span
                better = other_trusted & (~trusted | (penalised < cost))
                best = torch.where(better, other, best)
                cost = torch.where(better, penalised, cost)
                trusted = trusted | better
        keep = ~trusted | occluded(disp)
        return torch.where(keep, disp, best.clamp(min=0.0))


def refined(predictor: Predictor, data: DataConfig, cfg: RefineConfig) -> Predictor:
    """``predictor`` ((B, 6, H, W) -> (B, 1, H, W) px) followed by :func:`refine`."""

    def run(pair: Tensor) -> Tensor:
        return refine(pair, predictor(pair), data, cfg)

    return run
