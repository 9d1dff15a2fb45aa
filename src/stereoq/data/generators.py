"""The synthetic scene generators by name (``data.synthetic.kind``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stereoq.data import synthetic, synthetic_scenes, textures
from stereoq.data.camera_effects import STRENGTH
from stereoq.data.synthetic_scenes import OBJECTS
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
"""The generators that take ``texture_dir``, ``objects`` and ``camera_strength``."""


def renderer(
    kind: str, texture_dir: Path | None = None, objects: tuple[int, int] = OBJECTS,
    camera_strength: tuple[float, float] | None = STRENGTH,
) -> Renderer:
    """The generator ``kind``; with ``texture_dir`` (scenes only) its photographs are loaded
    once here, so a folder without a readable image fails before any rendering. ``objects``
    and ``camera_strength`` (scenes only) are those of ``synthetic_scenes.render_pair``."""
    if kind not in GENERATORS:
        raise StereoqError(
            f"data.synthetic.kind {kind!r}: expected one of {', '.join(GENERATORS)}", exit_code=2
        )
    options = scene_options(objects, camera_strength)
    if texture_dir is not None:
        options["texture_dir"] = texture_dir
    if not options:
        return GENERATORS[kind]
    if kind not in PHOTO_KINDS:
        raise StereoqError(f"data.synthetic.{next(iter(options))} is used only by kinds "
                           f"{' and '.join(repr(k) for k in PHOTO_KINDS)}", exit_code=2)
    if texture_dir is not None:
        options["photos"] = textures.load_photos(options.pop("texture_dir"))
    return functools.partial(GENERATORS[kind], **options)


def scene_options(
    objects: tuple[int, int] = OBJECTS, camera_strength: tuple[float, float] | None = STRENGTH,
) -> dict[str, object]:
    """The scenes generator's options that differ from its defaults, by keyword (tuples)."""
    options: dict[str, object] = {}
    if tuple(objects) != OBJECTS:
        options["objects"] = tuple(objects)
    strength = None if camera_strength is None else tuple(camera_strength)
    if strength != STRENGTH:
        options["camera_strength"] = strength
    return options
