"""Checkpoints: written atomically, read with ``weights_only=True`` (loading never runs code).

A checkpoint is a dict of tensors, numbers, strings and lists: ``model`` (state dict), and in
``last.pt`` also ``optimizer``, ``epoch`` (epochs completed), ``best_epe``, ``best_epoch`` and
``rng`` (torch, numpy and Python generator states) for ``--resume``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stereoq.atomic import atomic_path
from stereoq.errors import StereoqError

FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (``stereoq.atomic``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: Path, hint: str = "") -> dict[str, Any]:
    """Read a checkpoint on CPU; a missing or unreadable file is a one-line ``StereoqError``.

    ``hint`` says how to make the file (e.g. "run `stereoq train --stage float` first").
    """
    path = Path(path)
    if not path.is_file():
        raise StereoqError(f"checkpoint {path} does not exist" + (f": {hint}" if hint else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, code the safe loader refuses
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StereoqError(f"checkpoint {path} cannot be read: {reason}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise StereoqError(f"checkpoint {path} is not a stereoq checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """The state of every random generator training may draw from."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
