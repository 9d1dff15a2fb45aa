"""The config file's ``refine`` section: photometric refinement (``stereoq.infer.refine``)."""

from __future__ import annotations

from pydantic import Field

from stereoq.section import Section


class RefineConfig(Section):
    """How a network's disparity is matched again at full resolution, around its own value.

    The network's errors in px grow with the image, so the offsets tried span a share of the
    image width. Defaults chosen on generated validation scenes at two sizes (README:
    "Photometric refinement"): the best span was 4 px at 384 px wide and 8 px at 768; the
    edge window and its distance cost improved EPE and bad-2 of both shipped models at both
    sizes.
    """

    span_pct: float = Field(
        default=1.0, gt=0, le=10, description="offsets tried: +-span_pct % of the image width"
    )
    steps: int = Field(default=8, ge=1, le=64, description="offsets tried on each side of 0")
    radius: int = Field(default=7, ge=1, le=32, description="guided filter window: 2r+1 px")
    eps: float = Field(default=1e-3, gt=0, le=1, description="guided filter regulariser")
    census_radius: int = Field(default=2, ge=1, le=3, description="census window: 2r+1 px")
    census_weight: float = Field(
        default=0.5, ge=0, le=1, description="census share of the cost (rest: luma and gradient)"
    )
    edge_window_pct: float = Field(
        default=2.0, ge=0, le=10,
        description="also search around the nearest and farthest network disparity within "
                    "+-edge_window_pct % of the image width (0: off)",
    )
    distance_cost: float = Field(
        default=0.01, ge=0, le=1,
        description="a candidate from the edge window pays this per span of distance from "
                    "the network's disparity",
    )

    def span_px(self, width: int) -> float:
        """The largest offset tried on an image ``width`` px wide."""
        return self.span_pct / 100.0 * width
