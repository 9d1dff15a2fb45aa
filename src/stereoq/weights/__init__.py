"""Trained models shipped inside the package, chosen by name.

Each model is one folder of this package: ``config.yaml`` (a config the project's loader reads:
the model section and the input normalisation the model was trained with), ``model.pt`` (its
float state dict, read with ``torch.load(weights_only=True)``: loading never runs code) and
``card.json`` (what it is, how it was trained, what it measures, and the commands behind each
figure). Adding a model is adding a folder.

Listing names and reading cards needs no torch (the CLI's help lists them); torch, the config
machinery and the model are imported only to load one.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stereoq.errors import StereoqError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from torch import Tensor, nn

    from stereoq.models.config import ModelConfig
    from stereoq.settings.config import ExperimentConfig

DEFAULT = "light-scenes-4x"
"""What ``stereoq infer`` runs when there is no trained run yet."""

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pt"
CARD_FILE = "card.json"

INPUT_KEYS = ("color", "mean", "std")
"""The ``data`` keys a model's input must be prepared with (its training normalisation)."""


def _root() -> Traversable:
    return resources.files(__name__)


def names() -> list[str]:
    """The shipped models, sorted: every folder of this package with a card."""
    return sorted(p.name for p in _root().iterdir() if p.is_dir() and (p / CARD_FILE).is_file())


def _folder(name: str) -> Traversable:
    if name not in names():
        raise StereoqError(f"unknown shipped model {name!r} (shipped: {', '.join(names())})",
                           exit_code=2)
    return _root() / name


@cache
def _card(name: str) -> dict[str, Any]:
    return json.loads((_folder(name) / CARD_FILE).read_text(encoding="utf-8"))


def card(name: str) -> dict[str, Any]:
    """The model card (a copy): name, summary, architecture, training, measurements."""
    return json.loads(json.dumps(_card(name)))


def summaries() -> dict[str, str]:
    """Name -> the card's one-line summary, for the CLI's help."""
    return {name: _card(name)["summary"] for name in names()}


def model_file(name: str) -> Path:
    """Where the model's state dict is (the package is installed as files, not zipped)."""
    return Path(str(_folder(name) / MODEL_FILE))


def config_file(name: str) -> Path:
    """Where the model's ``config.yaml`` is (``--config NAME`` reads it)."""
    return Path(str(_folder(name) / CONFIG_FILE))


def config(name: str, sets: list[str] | None = None) -> ExperimentConfig:
    """The model's own config: its model section and input normalisation, the data it was
    trained on, defaults elsewhere; ``sets``: ``KEY.PATH=VALUE`` overrides."""
    from stereoq.settings import load_config

    return load_config(str(config_file(name)), sets=sets)


def configure(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """``cfg`` with the shipped model's model section and input normalisation (``INPUT_KEYS``),
    so its data, run folder and recipes apply to that model."""
    own = config(name)
    data = cfg.data.model_copy(update={key: getattr(own.data, key) for key in INPUT_KEYS})
    return cfg.model_copy(update={"model": own.model, "data": data})


def state_dict(name: str) -> dict[str, Tensor]:
    """The model's weights, read with ``weights_only=True`` (a file holding anything but
    tensors and plain containers is refused, never executed)."""
    import torch

    path = model_file(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the safe unpickler's refusals, truncated files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StereoqError(f"shipped model {name} ({path}) cannot be read: {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StereoqError(f"shipped model {name} ({path}) is not a state dict of tensors")
    return state


def load(name: str) -> tuple[ModelConfig, dict[str, Tensor]]:
    """(model section, state dict) of a shipped model: ``build_model`` of the first takes the
    second strictly."""
    return config(name).model, state_dict(name)


def eval_model(name: str) -> nn.Module:
    """The shipped model ready to run: (B, 6, H, W) normalised pair of any size -> (B, 1, H, W)
    disparity in px, eval mode, on the CPU."""
    from stereoq.models.build import build_model

    model_cfg, state = load(name)
    model = build_model(model_cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise StereoqError(f"shipped model {name}: its weights do not fit its config "
                           f"({(first[1] if len(first) > 1 else first[0]).strip()})") from None
    return model.eval()
