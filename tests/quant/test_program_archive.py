"""int_infer archives: what torch.export.save writes loads; what could run code is refused."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from stereoq.errors import StereoqError
from stereoq.quant.artifacts import load_program, load_program_module, save_program

WEIGHTS_CONFIG = "data/weights/model_weights_config.json"


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the constant becomes a lifted tensor: the archive has a constants config too
        return self.conv(x) + torch.tensor(1.0)


class _MakeDir:
    """Pickles to ``os.mkdir(path)``: the marker of a payload that ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.path),))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    program = torch.export.export(_Tiny().eval(), (torch.randn(1, 3, 8, 8),))
    return save_program(tmp_path_factory.mktemp("program") / "model.pt2", program)


def _rewrite(source: Path, target: Path, before: str, extra: dict[str, bytes]) -> Path:
    """``source``'s entries, ``extra`` (names below the top folder) written before ``before``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        root = src.namelist()[0].split("/", 1)[0] + "/"
        for info in src.infolist():
            if info.filename == root + before:
                for name, data in extra.items():
                    out.writestr(root + name, data)
            out.writestr(info.filename, src.read(info))
    return target


def _pickled_config(saved: Path, marker: Path) -> dict[str, bytes]:
    """A weights config whose first weight is a pickle (creating ``marker`` when loaded)."""
    with zipfile.ZipFile(saved) as src:
        name = next(n for n in src.namelist() if n.endswith(WEIGHTS_CONFIG))
        config = json.loads(src.read(name))
    first = next(iter(config["config"].values()))
    first.update(path_name="weight_99", use_pickle=True)
    payload = io.BytesIO()
    torch.save(_MakeDir(marker), payload)
    return {WEIGHTS_CONFIG: json.dumps(config).encode(),
            "data/weights/weight_99": payload.getvalue()}


def test_a_saved_program_loads(saved: Path) -> None:
    program = load_program(saved)
    x = torch.randn(1, 3, 8, 8)
    assert program.module()(x).shape == (1, 4, 6, 6)


def test_a_programs_module_is_loaded_once_a_content_and_each_caller_gets_its_own(
    tmp_path: Path,
) -> None:
    x = torch.randn(1, 3, 8, 8)
    torch.manual_seed(0)
    first = _Tiny().eval()
    path = save_program(tmp_path / "model.pt2", torch.export.export(first, (x,)))
    a, b = load_program_module(path), load_program_module(path)
    assert a is not b
    with torch.no_grad():
        expected = first(x)
        a.conv.weight.zero_()  # one caller's change never reaches another's copy
        assert torch.equal(b(x), expected)
        assert torch.equal(load_program_module(path)(x), expected)
    # the file rewritten in place (same name) is another model: loaded anew
    second = _Tiny().eval()
    save_program(path, torch.export.export(second, (x,)))
    with torch.no_grad():
        assert torch.equal(load_program_module(path)(x), second(x))
    path.write_text("not a zip")
    with pytest.raises(StereoqError, match="cannot be read"):
        load_program_module(path)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("name_case", [str, str.upper], ids=["same", "other-case"])
def test_a_repeated_config_is_refused_before_its_pickle_runs(
    saved: Path, tmp_path: Path, name_case
) -> None:
    # zipfile reads the last of two same-named entries, torch's loader the first
    marker = tmp_path / "payload-ran"
    extra = _pickled_config(saved, marker)
    extra = {(name_case(n) if n == WEIGHTS_CONFIG else n): d for n, d in extra.items()}
    evil = _rewrite(saved, tmp_path / "model.pt2", WEIGHTS_CONFIG, extra)
    with pytest.raises(StereoqError) as err:
        load_program(evil)
    assert not marker.exists()
    message = str(err.value)
    assert str(evil) in message and "\n" not in message
    assert "repeats the entry" in message or "unexpected entry" in message


def test_a_pickled_weight_is_refused(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    extra = _pickled_config(saved, marker)
    evil = tmp_path / "model.pt2"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(evil, "w") as out:
        root = src.namelist()[0].split("/", 1)[0] + "/"
        for info in src.infolist():
            name = info.filename[len(root):]
            out.writestr(info.filename, extra.pop(name, None) or src.read(info))
        for name, data in extra.items():
            out.writestr(root + name, data)
    with pytest.raises(StereoqError, match=r"model .*model\.pt2 holds pickled data"):
        load_program(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry",
    ["data/aotinductor/model/model.so", "extra/notes.txt", "data/constants/custom_obj_0",
     "data/weights/model.pt", "../model.json"],
)
def test_unexpected_entries_are_refused(saved: Path, tmp_path: Path, entry: str) -> None:
    evil = _rewrite(saved, tmp_path / "model.pt2", "archive_format", {entry: b"x"})
    with pytest.raises(StereoqError, match=r"model .*model\.pt2 holds an unexpected entry"):
        load_program(evil)


def test_a_legacy_root_entry_is_refused(saved: Path, tmp_path: Path) -> None:
    evil = tmp_path / "model.pt2"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(evil, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info))
        out.writestr("version", b"8.0")
    with pytest.raises(StereoqError, match="unexpected entry version"):
        load_program(evil)


def test_a_file_that_is_no_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_text("not a zip")
    with pytest.raises(StereoqError, match=r"model .*model\.pt2 cannot be read"):
        load_program(path)
