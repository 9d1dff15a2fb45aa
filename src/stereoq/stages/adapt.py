"""``adapt``: the float model adapted to the user's own unlabeled pairs, in the engine's loop.

It starts from float's ``best.pt`` and trains on random crops of the pairs of
``stages.adapt.pairs`` with a loss that reads no ground truth (``stereoq.losses.label_free``:
SGBM proxy labels on confident pixels, photometric reconstruction, edge-aware smoothness).
``best.pt`` is chosen by the same loss on the held-out pairs; a folder's ground truth, when it
has one, is only reported (``val_epe`` ...). Later stages take ``adapt/best.pt`` as they take
float's with ``stages.calibration.source: adapt``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from stereoq.errors import StereoqError
from stereoq.stages.float_stage import FloatStage

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset

    from stereoq.data.pairs import Pair
    from stereoq.losses.label_free import LabelFreeLoss
    from stereoq.stages.unlabeled import UnlabeledPairs


class AdaptStage(FloatStage):
    """Label-free fine-tuning of the float model on a folder or glob of rectified pairs."""

    name = "adapt"
    summary = "adapt the float model to your own unlabeled pairs"
    previous = FloatStage.name
    takes_init = False
    takes_checkpoint = False
    select_on = "loss"

    def prepare(self, example: Tensor) -> nn.Module:
        from stereoq.engine.layout import channels_last

        return channels_last(FloatStage(self.cfg).model())

    def set_mode(self, model: nn.Module, training: bool) -> None:
        from torch import nn

        model.train(training)
        if training and self.recipe().freeze_bn:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # Data --------------------------------------------------------------------------------------

    @cached_property
    def sizes(self) -> dict[Pair, tuple[int, int]]:
        """Every pair found, with its (height, width); one size per pair, each fits the crop."""
        from stereoq.stages.unlabeled import check_large_enough, discover_pairs, pair_size

        recipe = self.recipe()
        self.check_crop()
        sizes = {}
        for pair in discover_pairs(recipe.pairs, recipe.right, f"stages.{self.name}"):
            sizes[pair] = pair_size(pair)
            check_large_enough(pair, sizes[pair], recipe.crop_size,
                               f"the training crop (stages.{self.name}.crop_size)")
        return sizes

    @cached_property
    def pairs(self) -> tuple[list[Pair], list[Pair]]:
        """(training, validation) pairs."""
        from stereoq.stages.unlabeled import split_pairs

        return split_pairs(list(self.sizes), self.recipe().val_fraction, self.cfg.seed)

    def check_crop(self) -> None:
        """The crop must be something the network trains on: multiples, at least its minimum."""
        model = self.cfg.model
        h, w = self.recipe().crop_size
        m = model.size_multiple
        least = (m, m * max(1, model.num_candidates - 1))
        if h % m or w % m or h < least[0] or w < least[1]:
            raise StereoqError(
                f"stages.{self.name}.crop_size: {h}x{w} must be multiples of {m} and at least "
                f"{least[0]}x{least[1]} for this model", exit_code=2
            )

    def data(self, split: Literal["train", "val"], crop: bool) -> Dataset:
        return self.pair_data(split, crop)

    def pair_data(self, split: Literal["train", "val"], crop: bool) -> UnlabeledPairs:
        from stereoq.baselines.proxy_labels import ProxyParams
        from stereoq.baselines.sgbm import SgbmParams
        from stereoq.stages.unlabeled import ProxyCache, UnlabeledPairs, common_size

        recipe, cfg = self.recipe(), self.cfg
        p = recipe.proxy
        sgbm = SgbmParams.covering(p.num_disparities or cfg.model.maxdisp, p.block_size)
        params = ProxyParams(
            SgbmParams(**{**sgbm.__dict__, "uniqueness_ratio": p.uniqueness_ratio}),
            p.lr_max_diff_px,
        )
        proxy = ProxyCache(self.dir / "proxy", params) if recipe.loss.proxy > 0 else None
        train, val = self.pairs
        if split == "val":
            return UnlabeledPairs(val, cfg.data, proxy, "full", recipe.crop_size)
        if crop:
            return UnlabeledPairs(train, cfg.data, proxy, "random", recipe.crop_size,
                                  repeats=recipe.crops_per_pair)
        common = common_size([self.sizes[p] for p in train], cfg.model.size_multiple)
        return UnlabeledPairs(train, cfg.data, proxy, "common", recipe.crop_size, common)

    # Loss --------------------------------------------------------------------------------------

    @cached_property
    def label_free(self) -> LabelFreeLoss:
        from stereoq.losses.label_free import LabelFreeLoss
        from stereoq.models.build import build_loss

        cfg = self.cfg
        return LabelFreeLoss(self.recipe().loss, build_loss(cfg.model), cfg.model.maxdisp,
                             cfg.data.mean, cfg.data.std)

    def criterion(self) -> LabelFreeLoss:
        return self.label_free

    def val_loss(self, pred: Tensor, batch: dict[str, Any]) -> Tensor:
        return self.label_free.final(pred, batch)

