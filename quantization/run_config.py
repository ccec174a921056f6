"""The run configuration: utils/'s toolchain-agnostic sections composed with every registered toolchain's own
(quantization/registry.py), so a toolchain's settings live in its folder and still load from the same YAML
recipe and flags. Precedence: dataclass defaults < YAML < CLI flags."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantization.registry import sections_of
from utils.config import CommonConfig, field_choices, load_into


def registered_settings() -> dict[str, Any]:
    """A default instance of every registered toolchain section, by name (read at each build: a toolchain
    registered later, by a test, is in the next config)."""
    sections = {section.name: section.settings() for section in sections_of()}
    clash = set(sections) & set(CommonConfig.__dataclass_fields__)
    if clash:
        raise ValueError(f"toolchain config sections {sorted(clash)} clash with common config keys")
    return sections


@dataclass
class RunConfig(CommonConfig):
    """One run's configuration: ``cfg.model`` ... ``cfg.training`` and ``cfg.<section>`` per toolchain section."""

    sections: dict[str, Any] = field(default_factory=registered_settings)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML recipe at ``path``, then dotted ``overrides`` ({'model.arch': ...})."""
    return load_into(RunConfig(), path, overrides)


def config_choices(dotted: str) -> tuple[str, ...] | None:
    """The values a config key such as ``ort.calibration_method`` accepts, where it is a choice() field."""
    return field_choices(RunConfig(), dotted)


#: keys of the run config itself (not of a section) that flags write
TOP_LEVEL_KEYS = ("runtimes", "target", "models_dir", "results_dir", "run_name", "toolchains")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = {k: v for k, v in vars(args).items() if "." in k or k in TOP_LEVEL_KEYS}
    return load_config(args.config, overrides)
