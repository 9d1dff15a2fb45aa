"""The app as a whole: every command's --help, --version, Ctrl-C and usage errors."""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stereoq.cli import app, main
from stereoq.cli.command import INTERRUPTED, reflow

COMMANDS = ("pack", "calops", "train", "predict", "infer", "check", "compile", "export")
# Typer's type placeholders: fine beside options that take a value, misleading beside a flag.
PLACEHOLDER = re.compile(r"<(bool|list\[[^\]]*\])>")


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["stereoq", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code


@pytest.mark.parametrize("command", [None, *COMMANDS])
@pytest.mark.parametrize("width", ["60", "100"])
def test_help_renders_without_placeholders(command: str | None, width: str) -> None:
    args = [command, "--help"] if command else ["--help"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": width, "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert res.exception is None and "Traceback" not in res.output
    assert "--help" in res.output
    assert not PLACEHOLDER.search(res.output), res.output


def test_flags_render_as_switches() -> None:
    res = CliRunner().invoke(app, ["infer", "--help"], env={"COLUMNS": "120", "NO_COLOR": "1"})
    line = next(ln for ln in res.output.splitlines() if "│ --ply " in ln)
    assert "--no-ply" in line and "<" not in line


@pytest.mark.parametrize("command", COMMANDS)
def test_docstring_paragraphs_are_one_line(command: str) -> None:
    # Typer keeps a docstring's line breaks and wraps each line again: sentences break mid-line.
    cmd = typer.main.get_command(app).commands[command]
    assert all("\n" not in p for p in cmd.help.split("\n\n")), cmd.help


def test_reflow_joins_lines_and_keeps_paragraphs() -> None:
    assert reflow("One\ntwo.\n\nThree\n  four.") == "One two.\n\nThree four."
    assert reflow("\b\nkeep\nlines") == "\b\nkeep\nlines"
    assert reflow(None) is None


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


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("train", "--lr", "inf"), "--lr"),
        (("export", "--min-agreement", "nan"), "--min-agreement"),
        (("pack", "--target-data-dir", "x", "--source", "synthetic", "--max-disp", "inf"),
         "--max-disp"),
    ],
)
def test_non_finite_option_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
    name: str,
) -> None:
    assert run_main(monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: option {name}: ") and "finite" in err


def test_config_file_errors_are_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    for config in (latin, tmp_path):
        assert run_main(monkeypatch, "calops", "--config", str(config)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: config {config}: "), lines
