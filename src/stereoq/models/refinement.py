"""Edge-aware hierarchical refinement (StereoNet, Khamis et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveFloat, PositiveInt
from torch import Tensor, nn

from stereoq.models.blocks import BasicBlock, conv_bn_relu
from stereoq.registry import REFINEMENTS


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, H, W) to ``size``; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DisparityOffset(nn.Sequential):
    """(B, C, H, W) features -> (B, 1, H, W) disparity offset: 3x3 conv + BN, no ReLU.

    Its own class so that quantization tells it from the feature convolutions.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, 1, 3, 1, padding=1, bias=False), nn.BatchNorm2d(1))


class RefinementLevel(nn.Module):
    """Predicts a disparity offset from the upsampled disparity and the left image."""

    def __init__(self, channels: int, num_blocks: int) -> None:
        super().__init__()
        self.stem = conv_bn_relu(4, channels)
        self.blocks = nn.Sequential(*[BasicBlock(channels, channels) for _ in range(num_blocks)])
        self.offset = DisparityOffset(channels)
        # Start near the identity (offset ~ 0): with BN's default scale of 1 the offset has unit
        # variance in normalised disparity, i.e. +-maxdisp px of noise added at every level,
        # and the first few hundred steps went into shrinking it before anything was learnt.
        # Not exactly 0, so that every weight still gets a gradient (Adam rescales it).
        nn.init.constant_(self.offset[1].weight, 0.01)

    def forward(self, disp: Tensor, image: Tensor) -> Tensor:
        """(B, 1, H, W) disparity, (B, 3, H, W) image -> (B, 1, H, W) offset."""
        return self.offset(self.blocks(self.stem(torch.cat([disp, image], dim=1))))


def per_level(value: int | list[int], levels: int, name: str) -> list[int]:
    """One value for every level, or a list that must have one per level."""
    if isinstance(value, int):
        return [value] * levels
    if len(value) != levels:
        raise ValueError(f"refinement.{name} has {len(value)} entries; the model has {levels} "
                         "refinement levels (refine_levels)")
    return list(value)


def _rescale(
    stem_weight: Tensor, offset_weight: Tensor, offset_bias: Tensor, factor: float
) -> None:
    """In place: a level's weights for gain g -> those of the same function for gain g / factor
    (the stem's disparity input channel and the offset's BN scale and shift)."""
    with torch.no_grad():
        stem_weight[:, :1] *= factor
        offset_weight /= factor
        offset_bias /= factor


@REFINEMENTS.register("edge_aware_refinement")
class EdgeAwareRefinement(nn.Module):
    """``levels`` refinement steps, each doubling resolution up to the input size.

    The network carries disparity normalised by maxdisp (d / D). With ``disparity_unit_px``
    set, each level reads and writes it in units of that many pixels instead: its input
    disparity is multiplied by ``gain = maxdisp / disparity_unit_px`` and its offset divided
    by it. The function is the same for suitably scaled weights, but the optimiser's steps are
    not: in units of maxdisp a few pixels of disparity edge are ~0.05 against image edges of
    ~1, and the levels learnt nothing in the quick start's budget (README, "The model"). The
    gain is a buffer of the state dict (only when set) and weights of another unit are converted
    exactly on load (no gain: the original unit), so any checkpoint loads into any unit;
    ``fold_gain`` moves the gain into the weights for export.
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        channels: PositiveInt | list[PositiveInt] = 32
        """Feature channels of every level, or a list: one per level, coarse to fine."""
        num_blocks: NonNegativeInt | list[NonNegativeInt] = 6
        """Residual blocks of every level, or a list: one per level, coarse to fine."""
        disparity_unit_px: PositiveFloat | None = None
        """Pixels per unit of the disparity the levels see; None: maxdisp (the original)."""

    def __init__(
        self,
        levels: int,
        channels: int | list[int],
        num_blocks: int | list[int],
        maxdisp: int | None = None,
        disparity_unit_px: float | None = None,
    ) -> None:
        super().__init__()
        widths = per_level(channels, levels, "channels")
        depths = per_level(num_blocks, levels, "num_blocks")
        self.levels = nn.ModuleList(
            RefinementLevel(c, b) for c, b in zip(widths, depths, strict=True)
        )
        if disparity_unit_px is not None:
            if maxdisp is None:
                raise ValueError("disparity_unit_px needs the network's maxdisp")
            self.register_buffer("gain", torch.tensor(maxdisp / disparity_unit_px))

    @property
    def scaled(self) -> bool:
        """Whether the levels work in a unit of their own (the gain is not folded away)."""
        return "gain" in self._buffers

    @torch.no_grad()
    def fold_gain(self) -> None:
        """Move the gain into each level's stem and offset weights: same outputs, no multiplies
        in the graph (exact in train and eval mode: BN follows both convolutions)."""
        if not self.scaled:
            return
        for level in self.levels:
            bn = level.offset[1]
            _rescale(level.stem[0].weight, bn.weight, bn.bias, float(self.gain))
        del self._buffers["gain"]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Weights saved in another unit (or none: gain 1) are rescaled to this model's."""
        key = prefix + "gain"
        saved = float(state_dict.pop(key)) if key in state_dict else 1.0
        mine = float(self.gain) if self.scaled else 1.0
        if self.scaled:
            state_dict[key] = self.gain.detach().clone()
        if saved != mine:
            for i in range(len(self.levels)):
                names = [f"{prefix}levels.{i}.{n}" for n in
                         ("stem.0.weight", "offset.1.weight", "offset.1.bias")]
                if all(n in state_dict for n in names):
                    tensors = [state_dict[n].clone() for n in names]
                    _rescale(*tensors, saved / mine)
                    state_dict.update(zip(names, tensors, strict=True))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, coarse: Tensor, left: Tensor) -> list[Tensor]:
        """Coarse (B, 1, H/2^L, W/2^L) -> refined disparities; the last entry is an offset.

        Returns L tensors: the refined disparity at 1/2^(L-1) ... 1/2, then the full-resolution
        offset that post-processing adds to the upsampled 1/2 disparity.
        """
        height, width = left.shape[-2:]
        n = len(self.levels)
        outputs: list[Tensor] = []
        disp = coarse
        for i, level in enumerate(self.levels):
            scale = 2 ** (n - 1 - i)
            size = (height // scale, width // scale)
            up = resize(disp, size)
            if self.scaled:
                offset = level(up * self.gain, resize(left, size)) / self.gain
            else:
                offset = level(up, resize(left, size))
            if i == n - 1:
                outputs.append(offset)
            else:
                disp = F.relu(up + offset)
                outputs.append(disp)
        return outputs
