"""The benchmark layouts' shared types and their registry (``kitti.py`` and ``middlebury.py``
register into it; ``benchmarks.py`` reads every layout's samples the same way)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stereoq.errors import StereoqError


@dataclass(frozen=True)
class Entry:
    """One training pair's files. ``noc`` is a non-occluded ground-truth PNG (KITTI, same
    encoding as ``disp``) or a mask PNG (Middlebury/ETH3D ``mask0nocc.png``, 255 = non-occluded),
    as ``noc_kind`` says."""

    name: str
    left: Path
    right: Path
    disp: Path
    noc: Path | None = None
    noc_kind: str = "mask"
    calib: Path | None = None


@dataclass(frozen=True)
class Layout:
    """A benchmark's folder layout: its name, how it finds the pairs, and its own metrics
    (names of ``stereoq.engine.metrics.BenchmarkMetrics``, reported on all and non-occluded
    pixels)."""

    name: str
    title: str
    find: Callable[[Path], list[Entry]]
    metrics: tuple[str, ...] = ()


LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise KeyError(f"benchmark layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def no_layout(title: str, root: Path, expected: str, missing: str) -> StereoqError:
    """The one-line error of a folder that does not match a layout."""
    return StereoqError(f"{root}: not in the {title} layout (expected {expected}; missing "
                        f"{missing})")
