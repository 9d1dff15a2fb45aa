"""What an int_infer archive (``torch.export.save``'s zip) may hold before it is loaded.

``torch.export.load`` is not a safe loader: it unpickles weights and constants marked
``use_pickle``, custom and opaque objects, the payloads of the legacy archive format, and
loads AOTInductor libraries found in the archive. So an archive is loaded only when it holds
exactly what ``torch.export.save`` writes for a plain program (torch 2.13): raw tensor bytes,
the graph as JSON, and sample inputs the weights-only loader accepts.

Python's ``zipfile`` and torch's reader resolve a repeated entry name differently (torch also
matches names case-insensitively), so repeated names are refused rather than resolved, and the
configs are read with torch's own reader: the check sees the bytes the loader will see.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch

from stereoq.errors import StereoqError

# Relative to the archive's one top folder.
_ENTRY = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/(model_weights_config\.json|weight_\d+)"
    r"|data/constants/(model_constants_config\.json|tensor_\d+)"
)
# Config file -> the raw-tensor file names its entries may point to.
_CONFIGS = {
    "data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
    "data/constants/model_constants_config.json": re.compile(r"tensor_\d+"),
}
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def check_program_archive(path: Path, data: bytes) -> None:
    """Refuse ``data`` (the bytes of ``path``) unless loading it can run no code of its own."""
    names = _entry_names(path, data)
    reader = _torch_reader(path, data)
    if sorted(reader.get_file_names()) != sorted(names):
        raise StereoqError(f"model {path} lists different entries to torch; refusing to load it")
    for name, allowed in _CONFIGS.items():
        if name in names:
            _check_config(path, name, reader.read_bytes(name), allowed)
    if _SAMPLE_INPUTS in names:
        try:
            torch.load(io.BytesIO(reader.read_bytes(_SAMPLE_INPUTS)), weights_only=True)
        except Exception:
            raise StereoqError(
                f"model {path} holds data the weights-only loader refuses ({_SAMPLE_INPUTS})"
            ) from None


def _entry_names(path: Path, data: bytes) -> list[str]:
    """The entries' names below the archive's top folder, each allowed and given once."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise StereoqError(f"model {path} cannot be read: {err}") from None
    if not names:
        raise StereoqError(f"model {path} cannot be read: the archive is empty")
    root = names[0].split("/", 1)[0] + "/"
    seen: set[str] = set()
    relative = []
    for name in names:
        if name.lower() in seen:
            raise StereoqError(f"model {path} repeats the entry {name}; refusing to load it")
        seen.add(name.lower())
        if not (name.startswith(root) and _ENTRY.fullmatch(name[len(root):])):
            raise StereoqError(
                f"model {path} holds an unexpected entry {name}; refusing to load it"
            )
        relative.append(name[len(root):])
    return relative


def _torch_reader(path: Path, data: bytes):  # -> torch.export.pt2_archive.PT2ArchiveReader
    from torch.export.pt2_archive import PT2ArchiveReader

    try:
        return PT2ArchiveReader(io.BytesIO(data))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StereoqError(f"model {path} cannot be read: {reason}") from None


def _check_config(path: Path, name: str, raw: bytes, allowed: re.Pattern[str]) -> None:
    """Every entry of a payload config names a raw tensor file, never a pickle."""
    try:
        config = json.loads(raw)["config"]
        entries = list(config.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StereoqError(f"model {path} cannot be read: {name} is not a payload config") from None
    for entry in entries:
        raw_tensor = (
            isinstance(entry, dict)
            and entry.get("use_pickle") is False
            and isinstance(entry.get("path_name"), str)
            and allowed.fullmatch(entry["path_name"]) is not None
        )
        if not raw_tensor:
            raise StereoqError(f"model {path} holds pickled data ({name}); refusing to load it")
