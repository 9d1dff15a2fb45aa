"""How quantized models are saved and loaded (the stages in ``stereoq.stages`` say where).

- A fake-quantized graph (calibration, QAT) is saved as its state dict and loaded by
  re-preparing the configured model and ``load_state_dict``;
- the integer (Q/DQ) program is saved with ``torch.export.save``; it loads with
  ``torch.export.load`` without stereoq's model classes (only the quantize/dequantize ops
  must be registered: ``import torch.ao.quantization.fx._decomposed``). The archive holds the
  graph as JSON and the weights as raw tensor bytes. ``torch.export.load`` itself is not a safe
  loader (it unpickles tensor subclasses, custom objects and any artifact the weights-only
  loader refuses), so ``load_program`` first checks the archive
  (``stereoq.quant.program_archive``) and loads the very bytes it checked.

Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch.fx import GraphModule

from stereoq.atomic import atomic_path
from stereoq.engine.checkpoint import load_checkpoint
from stereoq.errors import StereoqError
from stereoq.quant.program_archive import check_program_archive
from stereoq.quant.recipes import qat_recipe
from stereoq.settings.config import ExperimentConfig


def fresh_fake_quant(cfg: ExperimentConfig, raised: dict[str, str] | None = None) -> GraphModule:
    """The configured model's fake-quant graph with untrained weights (to load a state into);
    ``raised``: the budget search's layers instead of its record (``stereoq.quant.recipes``).

    Exporting takes seconds, so one process exports each model config once and hands out
    copies (a pipeline run in one process loads the graph several times).
    """
    recipe = qat_recipe(cfg, raised)
    key = (cfg.model.model_dump_json(), recipe)
    if key not in _FRESH:
        from stereoq.models.build import build_model
        from stereoq.quant.prepare import prepare

        _FRESH.clear()
        _FRESH[key] = prepare(build_model(cfg.model), recipe)
    from stereoq.quant.prepare import copy_graph

    return copy_graph(_FRESH[key])


_FRESH: dict[tuple, GraphModule] = {}


def load_fake_quant(cfg: ExperimentConfig, path: Path, hint: str = "") -> GraphModule:
    """A calibration or QAT graph (all outputs) from its checkpoint, eval mode, ranges frozen;
    a missing file or another model's state is a one-line error (``hint``: how to make it)."""
    from stereoq.quant.prepare import set_observers

    state = load_checkpoint(path, hint=hint)
    graph = fresh_fake_quant(cfg)
    try:
        graph.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise StereoqError(
            f"{path} does not match the config's model ({detail.rstrip('.')})"
        ) from None
    graph.eval()
    set_observers(graph, False)
    return graph


def save_program(path: Path, program: torch.export.ExportedProgram) -> Path:
    """``torch.export.save`` to ``path`` atomically (``stereoq.atomic``).

    The temp file keeps the final name: the archive's inner folder is named after it.
    """
    with atomic_path(path, keep_name=True) as tmp:
        torch.export.save(program, tmp)
    return path


def load_program(path: Path, hint: str = "") -> torch.export.ExportedProgram:
    """Load an integer program; a missing or unreadable file is a one-line error."""
    path = Path(path)
    return _load_checked(path, _read_program(path, hint))


def load_program_module(path: Path, hint: str = "") -> GraphModule:
    """``load_program(path).module()``, deserialized once per process for each content.

    Loading a program takes seconds even for a tiny model (``torch.export.load`` rebuilds
    its symbolic shapes), and a pipeline run in one process (int_infer, predict, compile and
    its validation) asks for the same file several times. The cache is keyed by the bytes'
    SHA-256, so a rewritten file is loaded anew; each caller gets its own deep copy.
    """
    from stereoq.quant.prepare import deepcopy_graph

    path = Path(path)
    data = _read_program(path, hint)
    key = hashlib.sha256(data).hexdigest()
    if key not in _MODULES:
        module = _load_checked(path, data).module()
        _MODULES.clear()
        _MODULES[key] = module
    return deepcopy_graph(_MODULES[key])


_MODULES: dict[str, GraphModule] = {}


def _read_program(path: Path, hint: str) -> bytes:
    if not path.is_file():
        raise StereoqError(f"model {path} does not exist" + (f": {hint}" if hint else ""))
    try:
        return path.read_bytes()
    except OSError as err:
        raise StereoqError(f"model {path} cannot be read: {err.strerror}") from None


def _load_checked(path: Path, data: bytes) -> torch.export.ExportedProgram:
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the Q/DQ ops)

    check_program_archive(path, data)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StereoqError(f"model {path} cannot be read: {reason}") from None
