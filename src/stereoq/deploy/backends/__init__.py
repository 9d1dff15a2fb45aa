"""Named deployment backends: one module each, registered by name, imported on first use.

A backend turns the stage's deployed graph (the ONNX export, or the ``torch.export`` program for
backends that declare ``consumes = "program"``) into something that runs on a target, says which
precision every op runs in there (``check``), builds the deployable artifact (``compile``),
measures it (``benchmark``) and runs it for validation (``load``). Adding a target (TensorRT,
OpenVINO) is one more module that registers a ``Backend`` subclass and one line in ``MODULES``.
"""

from __future__ import annotations

import importlib

from stereoq.deploy.backends.base import BACKENDS, Backend
from stereoq.errors import StereoqError

MODULES = {
    "ort": "stereoq.deploy.backends.ort",
    "inductor": "stereoq.deploy.backends.inductor",
    "openvino": "stereoq.deploy.backends.openvino",
    "openvino-bf16": "stereoq.deploy.backends.openvino",
}
"""Backend name -> module that registers it (imported lazily: runtimes are heavy)."""


def backend_names() -> list[str]:
    return sorted(MODULES)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; a one-line option error if there is none."""
    if name not in MODULES:
        raise StereoqError(
            f"option --backend: unsupported backend {name!r} (available: "
            f"{', '.join(backend_names())})",
            exit_code=2,
        )
    importlib.import_module(MODULES[name])
    return BACKENDS.build(name)
