"""The synthetic scene generators by name (``data.synthetic.kind``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stereoq.data import synthetic, synthetic_scenes, textures
from stereoq.errors import StereoqError

# render(seed, index, height, width, max_disp) -> left, right (uint8 (H, W, 3) RGB) and the left
# view's disparity (float32 (H, W), px); deterministic in (seed, index).
Renderer = Callable[[int, int, int, int, float], tuple[np.ndarray, np.ndarray, np.ndarray]]

OPEN_SHARE = 0.35
"""``structures``: the share of its solid objects that are open (rings, frames, lattices)."""

GENERATORS: dict[str, Renderer] = {
    "planes": synthetic.render_pair,
    "scenes": synthetic_scenes.render_pair,
    "structures": functools.partial(synthetic_scenes.render_pair, open_share=OPEN_SHARE),
}
PHOTO_KINDS = ("scenes", "structures")
"""The generators that take ``texture_dir``."""


def renderer(kind: str, texture_dir: Path | None = None) -> Renderer:
    """The generator ``kind``; with ``texture_dir`` (scenes only) its photographs are loaded
    once here, so a folder without a readable image fails before any rendering."""
    if kind not in GENERATORS:
        raise StereoqError(
            f"data.synthetic.kind {kind!r}: expected one of {', '.join(GENERATORS)}", exit_code=2
        )
    if texture_dir is None:
        return GENERATORS[kind]
    if kind not in PHOTO_KINDS:
        raise StereoqError("data.synthetic.texture_dir is used only by kinds "
                           f"{' and '.join(repr(k) for k in PHOTO_KINDS)}", exit_code=2)
    return functools.partial(GENERATORS[kind], photos=textures.load_photos(texture_dir))
