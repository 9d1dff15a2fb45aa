"""The ``data`` section: where samples come from and how they are transformed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from stereoq.section import Section


class SyntheticConfig(Section):
    """Generated stereo scenes with exact ground truth (the embedded default source)."""

    train_count: PositiveInt = 1000
    val_count: PositiveInt = 64
    height: PositiveInt = 256
    width: PositiveInt = 512
    max_disp: PositiveFloat = 64.0
    seed: NonNegativeInt = 0
    kind: Literal["planes", "scenes", "structures"] = Field(
        default="planes",
        description="planes: a slanted background and 3-8 planar shapes with smooth textures; "
        "scenes: 10-30 planar, curved and thin objects at every depth, a ground plane, "
        "natural-image textures and per-view camera differences; structures: scenes in which "
        "about a third of the objects are open (wheels with spokes, frames, lattices of bars) "
        "so that what is behind shows through them",
    )
    texture_dir: Path | None = Field(
        default=None,
        description="scenes and structures only: a folder of photographs (png, jpg, ...) whose "
        "crops also texture the objects",
    )

    objects: tuple[NonNegativeInt, NonNegativeInt] = Field(
        default=(10, 30),
        description="scenes and structures only: the number of objects in a scene, drawn "
        "uniformly from this range (the background and ground plane not counted)",
    )
    camera_strength: tuple[float, float] | None = Field(
        default=(0.0, 1.0),
        description="scenes and structures only: how far apart the two cameras are (gain, "
        "gamma, colour, blur, noise, JPEG), drawn per scene from this range, 0 to 2; "
        "1 is the default's strongest; null: no camera effects, the exact rendering",
    )

    @model_validator(mode="after")
    def _scene_options_need_scenes(self) -> SyntheticConfig:
        if self.kind == "planes":
            for name in ("texture_dir", "objects", "camera_strength"):
                if getattr(self, name) != type(self).model_fields[name].default:
                    raise ValueError(f"{name} is used only by kinds 'scenes' and 'structures'")
        if self.objects[0] > self.objects[1]:
            raise ValueError(f"objects: the low end {self.objects[0]} is above the high end "
                             f"{self.objects[1]}")
        if self.camera_strength is not None:
            lo, hi = self.camera_strength
            if not 0.0 <= lo <= hi <= 2.0:
                raise ValueError(f"camera_strength: expected 0 <= low <= high <= 2, got "
                                 f"[{lo}, {hi}]")
        return self


class AugmentConfig(Section):
    """Training-time augmentation (``stereoq.data.augment``); off unless ``enabled``."""

    enabled: bool = False
    scale: tuple[PositiveFloat, PositiveFloat] | None = Field(
        default=(0.7, 1.5), description="zoom factor range of both views and the disparity "
        "(raised where the training crop would not fit); null: no zoom",
    )
    color: bool = True
    asymmetric_prob: float = Field(default=0.2, ge=0.0, le=1.0,
                                   description="chance that each view gets its own colour draw")
    brightness: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.3)
    contrast: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.3)
    gamma: tuple[PositiveFloat, PositiveFloat] = (0.8, 1.25)
    saturation: tuple[float, float] = (0.5, 1.4)
    eraser_prob: float = Field(default=0.5, ge=0.0, le=1.0,
                               description="chance of painting patches of the right view")
    eraser_max: PositiveInt = 2
    eraser_size: tuple[PositiveFloat, PositiveFloat] = Field(
        default=(0.1, 0.25), description="patch side as a fraction of the image side")

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> AugmentConfig:
        for name in ("scale", "brightness", "contrast", "gamma", "saturation", "eraser_size"):
            pair = getattr(self, name)
            if pair is not None and pair[0] > pair[1]:
                raise ValueError(f"{name}: the low end {pair[0]} is above the high end {pair[1]}")
        if self.saturation[0] < 0:
            raise ValueError("saturation: must be >= 0")
        if self.eraser_size[1] > 1:
            raise ValueError("eraser_size: a fraction of the image side, at most 1")
        return self


class DataConfig(Section):
    """Data source and input pipeline shared by training, evaluation and calibration."""

    source: Literal[
        "synthetic", "sceneflow", "lmdb", "kitti2015", "kitti2012", "middlebury", "eth3d"
    ] = "synthetic"
    root: Path | None = Field(
        default=None, description="dataset root in its raw layout (SceneFlow or a benchmark)"
    )
    val_every: NonNegativeInt = Field(
        default=0,
        description="benchmarks: every N-th pair is validation only, the rest training; "
        "0: every pair in both (evaluate or fine-tune on the whole training set)",
    )
    lmdb_dir: Path | None = Field(
        default=None, description="directory holding train_lmdb/ and test_lmdb/ from `pack`"
    )
    synthetic: SyntheticConfig = SyntheticConfig()
    augment: AugmentConfig = AugmentConfig()
    train_crop: tuple[PositiveInt, PositiveInt] | None = (256, 512)
    color: Literal["yuv444", "rgb"] = "yuv444"
    mean: float = 128.0
    std: PositiveFloat = 128.0
    num_workers: NonNegativeInt = Field(
        default=0, description="training loader processes (0: the training process loads)"
    )
    pin_memory: bool = Field(
        default=True, description="page-locked training batches, copied to a CUDA GPU "
        "asynchronously; without CUDA no effect"
    )
    persistent_workers: bool = Field(
        default=False, description="keep the loader processes from one epoch to the next "
        "(needs num_workers > 0); saves their start each epoch, but a --resume'd run no longer "
        "draws the uninterrupted run's random crops"
    )
    prefetch_factor: PositiveInt | None = Field(
        default=None, description="batches each loader process prepares ahead (needs "
        "num_workers > 0); default: PyTorch's (2)"
    )

    @model_validator(mode="after")
    def _worker_options_need_workers(self) -> DataConfig:
        for name in ("persistent_workers", "prefetch_factor"):
            if getattr(self, name) not in (None, False) and self.num_workers == 0:
                raise ValueError(f"{name} needs num_workers > 0 (loader processes)")
        return self
