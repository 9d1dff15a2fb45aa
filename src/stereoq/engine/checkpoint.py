"""Checkpoints: written atomically, read with ``weights_only=True`` (loading never runs code).

A checkpoint is a dict of tensors, numbers, strings and lists: ``model`` (state dict), and in
``last.pt`` also ``optimizer``, ``epoch`` (epochs completed), ``best_epe``, ``best_epoch``,
``rng`` (torch, numpy and Python generator states) and ``scaler`` (fp16's gradient scaler; empty
for other precisions) for ``--resume``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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


def load_model_state(model: nn.Module, saved: Mapping[str, Any], path: Path, hint: str) -> None:
    """``model.load_state_dict(saved)``; a checkpoint of another model is a one-line
    ``StereoqError`` naming ``path``, the first difference and how many entries differ."""
    try:
        model.load_state_dict(saved)
    except RuntimeError as err:
        raise StereoqError(
            f"checkpoint {path} holds another model than this config's: "
            f"{state_mismatch(model.state_dict(), saved, str(err))}; {hint}"
        ) from None


def state_mismatch(expected: Mapping[str, Any], saved: Mapping[str, Any], error: str) -> str:
    """The first difference between ``saved`` and ``expected``, in the model's order: a shape
    first (it tells most about which model the checkpoint holds), else a missing entry, else an
    extra one.

    Shapes count only where ``error`` (load_state_dict's message) names them: some modules
    (fake quants) resize their own buffers on load.
    """
    def shape(value: Any) -> str:
        return "x".join(str(d) for d in getattr(value, "shape", ())) or "scalar"

    shapes = [f"{key} is {shape(saved[key])} in the checkpoint but {shape(value)} in the model"
              for key, value in expected.items()
              if key in saved and f"size mismatch for {key}:" in error]
    missing = [f"{key} is missing from the checkpoint" for key in expected if key not in saved]
    extra = [f"{key} is not in the model" for key in saved if key not in expected]
    found = shapes + missing + extra
    if not found:
        lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
        return (lines[1] if len(lines) > 1 else lines[0] if lines else "unknown").rstrip(".")
    more = len(found) - 1
    return found[0] + (f" ({more} more difference{'s' if more > 1 else ''})" if more else "")


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
