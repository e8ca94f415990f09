"""Trainer configs (`.py` files defining `get_config()`, big_vision style) and data mixtures (`mixtures/*.py`, each
defining `MIXTURE`). `load` reads one and applies `--config.key=value` overrides (ml_collections' syntax)."""

from __future__ import annotations

import ast
import os
import runpy
from collections.abc import Sequence

from unisim.schemas.errors import UserError


class ConfigError(UserError):
    """A config file or an override that cannot be applied; the message names it."""


def load(path: str, overrides: Sequence[str] = ()):
    """`path`'s `get_config()` with each override `config.a.b=value` applied; the value is read as the type the
    field already has (a tuple or list as a Python literal, e.g. `config.model.channel_mult=(1,2)`)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    get_config = runpy.run_path(path).get("get_config")
    if get_config is None:
        raise ConfigError(f"{path} defines no get_config()")
    config = get_config()
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.split(".")
        if not sep or parts[0] != "config" or len(parts) < 2:
            raise ConfigError(f"override {item!r}: expected config.KEY=VALUE")
        parent = config
        for part in parts[1:-1]:
            if part not in parent:
                raise ConfigError(f"override {item!r}: the config has no {part!r} (in {'.'.join(parts[:-1])})")
            parent = parent[part]
        name = parts[-1]
        if name not in parent:
            raise ConfigError(f"override {item!r}: the config has no field {key!r}; its fields here: "
                              f"{', '.join(sorted(parent.keys()))}")
        parent[name] = _parse(text, parent[name], item)
    return config


def _parse(text: str, current, where: str):
    try:
        if isinstance(current, bool):
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        value = ast.literal_eval(text)
        return tuple(value) if isinstance(current, tuple) and isinstance(value, (list, tuple)) else value
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"override {where!r}: {e} (the field is {type(current).__name__})") from None
