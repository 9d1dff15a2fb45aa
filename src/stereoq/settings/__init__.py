"""Pydantic models of the config file and of every command's options."""

from stereoq.settings.config import ExperimentConfig, load_config

__all__ = ["ExperimentConfig", "load_config"]
