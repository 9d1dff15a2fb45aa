"""The distribution's metadata: the declared licence and the licence text it ships."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_the_apache_license_is_declared_and_shipped() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    # an SPDX string (a TOML table is deprecated by setuptools) and the file in every wheel
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert any(req.startswith("setuptools>=77") for req in pyproject["build-system"]["requires"])
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_every_shipped_model_file_is_package_data() -> None:
    """A wheel carries the shipped models (``stereoq.weights``): each file of each model folder
    matches one of the package-data globs (a new kind of file would otherwise stay behind)."""
    from fnmatch import fnmatch

    from stereoq import weights

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["stereoq"]
    package = ROOT / "src" / "stereoq"
    files = [p for name in weights.names() for p in (package / "weights" / name).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert {p.name for p in files} >= {weights.CONFIG_FILE, weights.MODEL_FILE, weights.CARD_FILE}
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch(relative, glob) for glob in globs), relative
