"""Load the curation config: the shipped defaults, deep-merged with a user's YAML and ``--set`` overrides.

Why strict: a misspelt threshold (``max_cut_per_minute``) silently falling back to the default would make a
curated data set look filtered when it was not, so unknown keys are an error that names the known ones.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


class ConfigError(ValueError):
    """The config cannot be used; the message says which key and what to do."""


def _merge(base: dict, override: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key {where + key!r}; known keys here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where + key!r} is a section; give a mapping, not {value!r}")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def parse_set(item: str) -> dict:
    """Turn ``"dynamics.threshold=30"`` into ``{"dynamics": {"threshold": 30}}`` (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"--set needs section.key=value; got {item!r}")
    dotted, raw = item.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw.strip() else None
    for part in reversed(dotted.strip().split(".")):
        value = {part: value}
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults <- ``path`` <- each ``--set`` override, in that order."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(user, dict):
            raise ConfigError(f"{path}: the config must be a YAML mapping of sections")
        config = _merge(config, user, "")
    for item in overrides:
        config = _merge(config, parse_set(item), "")
    return config


def with_overrides(config: dict, override: dict) -> dict:
    """Return ``config`` with a nested mapping of overrides applied (same strict key check)."""
    return _merge(config, override, "")
