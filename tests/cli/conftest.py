"""Helpers shared by the CLI tests."""

from __future__ import annotations

import sys

import pytest

from stereoq.cli import main


def invoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str):
    """Run ``stereoq ARGS`` in this process -> (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["stereoq", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err
