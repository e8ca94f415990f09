"""Trainer configs (`.py` files defining `get_config()`, big_vision style) and data mixtures (`mixtures/*.py`, each
defining `MIXTURE`). `load` reads one and applies `--config.key=value` overrides (ml_collections' syntax)."""

from __future__ import annotations

import ast
import os
import runpy
from collections.abc import Sequence

from unisim.schemas.errors import UserError
from unisim.schemas.options import coerce


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
    """`text` as the type of the field's `current` value: scalars by the one option parser (`schemas.options.coerce`,
    as every command-line flag is read), tuples, lists and None as Python literals."""
    try:
        if type(current) in (bool, int, float, str):
            return coerce(text, type(current), f"override {where!r}")
        value = ast.literal_eval(text)
        return tuple(value) if isinstance(current, tuple) and isinstance(value, (list, tuple)) else value
    except ValueError as e:  # coerce's message names the override already
        raise ConfigError(f"{e} (the field is {type(current).__name__})") from None
    except SyntaxError as e:
        raise ConfigError(f"override {where!r}: {e} (the field is {type(current).__name__})") from None
