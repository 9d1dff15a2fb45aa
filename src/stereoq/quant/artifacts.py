"""Where the quantized stages keep their models, and how they are saved and loaded.

- ``calibration/calibrated.pt``: state dict of the fake-quantized graph (ranges from calibration,
  observers frozen), loaded by re-preparing the configured model and ``load_state_dict``;
- ``qat/best.pt`` / ``last.pt``: the engine's checkpoints of the QAT graph, the same way;
- ``int_infer/model.pt2``: the integer (Q/DQ) program saved with ``torch.export.save``; it loads
  with ``torch.export.load`` without stereoq's model classes (only the quantize/dequantize ops
  must be registered: ``import torch.ao.quantization.fx._decomposed``). The archive holds the
  graph as JSON and the weights as raw tensor bytes. ``torch.export.load`` itself is not a safe
  loader (it unpickles tensor subclasses, custom objects and any artifact the weights-only
  loader refuses), so ``load_program`` first checks the archive
  (``stereoq.quant.program_archive``) and loads the very bytes it checked;
- ``<stage>/precision.json`` next to each: the per-op precision report.

Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn
from torch.fx import GraphModule

from stereoq.atomic import atomic_path
from stereoq.engine.checkpoint import load_checkpoint
from stereoq.engine.stage import stage_dir, train_hint
from stereoq.errors import StereoqError
from stereoq.quant.program_archive import check_program_archive
from stereoq.quant.recipes import qat_recipe
from stereoq.settings.config import ExperimentConfig

QUANT_STAGES = ("calibration", "qat", "int_infer")
REPORT_NAME = "precision.json"


def artifact_path(cfg: ExperimentConfig, stage: str) -> Path:
    """The file a quantized stage's model lives in."""
    names = {"calibration": "calibrated.pt", "qat": "best.pt", "int_infer": "model.pt2"}
    if stage not in names:
        raise StereoqError(f"stage {stage!r} has no quantized artifact", exit_code=2)
    return stage_dir(cfg, stage) / names[stage]


def report_path(cfg: ExperimentConfig, stage: str) -> Path:
    return stage_dir(cfg, stage) / REPORT_NAME


def fresh_fake_quant(cfg: ExperimentConfig) -> GraphModule:
    """The configured model's fake-quant graph with untrained weights (to load a state into).

    Exporting takes seconds, so one process exports each model config once and hands out
    copies (a pipeline run in one process loads the graph several times).
    """
    key = (cfg.model.model_dump_json(), qat_recipe(cfg))
    if key not in _FRESH:
        from stereoq.models.build import build_model
        from stereoq.quant.prepare import prepare

        _FRESH.clear()
        _FRESH[key] = prepare(build_model(cfg.model), qat_recipe(cfg))
    from stereoq.quant.prepare import copy_graph

    return copy_graph(_FRESH[key])


_FRESH: dict[tuple, GraphModule] = {}


def load_fake_quant(cfg: ExperimentConfig, stage: str) -> GraphModule:
    """The calibration or QAT graph (five outputs), eval mode, ranges frozen."""
    from stereoq.quant.prepare import set_observers

    path = artifact_path(cfg, stage)
    state = load_checkpoint(path, hint=train_hint(cfg, stage))
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
    """Load an int_infer program; a missing or unreadable file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise StereoqError(f"model {path} does not exist" + (f": {hint}" if hint else ""))
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the Q/DQ ops)

    try:
        data = path.read_bytes()
    except OSError as err:
        raise StereoqError(f"model {path} cannot be read: {err.strerror}") from None
    check_program_archive(path, data)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StereoqError(f"model {path} cannot be read: {reason}") from None


def load_stage_graph(cfg: ExperimentConfig, stage: str, integer: bool = True) -> nn.Module:
    """(B, 6, H, W), H and W multiples of 16 -> (1/2-res disparity, full-res offset), normalised.

    ``calibration`` and ``qat`` give their fake-quant graphs, ``int_infer`` the integer program.
    With ``integer`` (the default: how the model is evaluated) they compute as the deployment
    runtime does (``stereoq.quant.runtime_eval``); without it the graph is as saved
    (the Q/DQ form that exports to ONNX).
    """
    if stage not in QUANT_STAGES:
        raise StereoqError(f"stage {stage!r} is not a quantized stage", exit_code=2)
    if stage == "int_infer":
        program = load_program(artifact_path(cfg, stage), hint=train_hint(cfg, stage))
        graph: nn.Module = program.module()
    else:
        from stereoq.quant.prepare import LastTwo

        graph = LastTwo(load_fake_quant(cfg, stage))
    if not integer:
        return graph
    from stereoq.quant.runtime_eval import runtime_eval

    return runtime_eval(graph)
