"""The experiment config file: loading (YAML, data only), overrides and validation."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, NonNegativeInt, ValidationError

from stereoq.errors import StereoqError
from stereoq.models.config import ModelConfig
from stereoq.section import Section
from stereoq.settings.data import DataConfig
from stereoq.settings.refine import RefineConfig
from stereoq.settings.stages import StagesConfig

DEFAULT_CONFIG = "stereonet_synthetic"


class ExperimentConfig(Section):
    """One experiment: the model, the data and the recipe of every stage."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: Path = Field(default=Path("runs"), description="runs go to output_dir/name")
    seed: NonNegativeInt = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    stages: StagesConfig = StagesConfig()
    refine: RefineConfig = RefineConfig()

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def shipped_configs() -> list[str]:
    """Names of the configs that ship with the package."""
    folder = resources.files("stereoq") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


YAML_SUFFIXES = (".yaml", ".yml", ".json")  # JSON is YAML too


def _read(source: str) -> tuple[str, dict[str, Any]]:
    """(label for messages, the file's mapping); every problem names the file and exits 2."""
    path = Path(source)
    foreign = False
    if path.is_file():
        label = str(path)
        foreign = path.suffix != "" and path.suffix.lower() not in YAML_SUFFIXES
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise StereoqError(
                f"config {label}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                f"{err.start}); save it as UTF-8",
                exit_code=2,
            ) from None
        except OSError as err:
            raise StereoqError(
                f"config {label}: cannot be read ({err.strerror or err})", exit_code=2
            ) from None
    elif source in shipped_configs():
        text = (resources.files("stereoq") / "configs" / f"{source}.yaml").read_text("utf-8")
        label = source
    elif path.is_dir():
        raise StereoqError(f"config {source}: is a directory, not a config file", exit_code=2)
    else:
        known = ", ".join(shipped_configs())
        raise StereoqError(
            f"config {source!r}: no such file, and not a shipped config ({known})", exit_code=2
        )
    not_yaml = f"config {label}: not YAML (a {path.suffix} file; configs are YAML mappings)"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        if foreign:
            raise StereoqError(not_yaml, exit_code=2) from None
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None)
        raise StereoqError(
            f"config {label}:{where} is not valid YAML" + (f" ({problem})" if problem else ""),
            exit_code=2,
        ) from None
    if data is None:
        raise StereoqError(f"config {label}: empty (expected a YAML mapping)", exit_code=2)
    if not isinstance(data, dict):
        if foreign:
            raise StereoqError(not_yaml, exit_code=2)
        kind = "a list" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise StereoqError(
            f"config {label}: the top level must be a mapping of keys (it is {kind})",
            exit_code=2,
        )
    return label, data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar or list)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise StereoqError(f"--set {item!r}: expected KEY.PATH=VALUE", exit_code=2)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise StereoqError(f"--set {item!r}: value is not valid YAML", exit_code=2) from None
    return key.strip().split("."), parsed


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k0][k1]...`` = value, creating intermediate mappings."""
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if not isinstance(child, dict):
            child = {}
            node[k] = child
        node = child
    node[keys[-1]] = value


def format_validation_error(label: str, err: ValidationError) -> str:
    """The first problem of a pydantic error as 'config X: key.path: message'."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return f"config {label}: {where}: {msg}{tail}"


def load_config(
    source: str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> ExperimentConfig:
    """Read a config (path or shipped name; default: the synthetic one), apply overrides.

    ``overrides`` maps dotted key paths to values (from typed CLI options); ``sets`` are raw
    ``KEY.PATH=VALUE`` strings. Every problem raises ``StereoqError`` with exit code 2.
    """
    label, data = _read(source or DEFAULT_CONFIG)
    for item in sets or []:
        apply_override(data, *parse_override(item))
    for key, value in (overrides or {}).items():
        if value is not None:
            apply_override(data, key.split("."), value)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise StereoqError(format_validation_error(label, err), exit_code=2) from None
