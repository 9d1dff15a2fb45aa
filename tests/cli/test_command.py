"""The app as a whole: --version, Ctrl-C and usage errors."""

from __future__ import annotations

import sys
from importlib.metadata import version

import pytest

from stereoq.cli import main
from stereoq.cli.command import INTERRUPTED


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["stereoq", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(monkeypatch, "--version") in (0, None)
    assert capsys.readouterr().out.strip() == f"stereoq {version('stereoq')}"


def test_ctrl_c_is_one_line_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import stereoq.settings

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stereoq.settings, "load_config", interrupted)
    assert run_main(monkeypatch, "calops") == 130
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"error: {INTERRUPTED}"], err


def test_usage_error_still_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "calops", "--bogus") == 2
    assert "No such option" in capsys.readouterr().err
