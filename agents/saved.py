"""How the small networks of `agents/` (a policy, a planner) are kept on disk, local or gs://: the parameters as flax
msgpack beside the config as JSON. Loading rebuilds the config (JSON lists back to tuples) and reads the parameters
into a template made from it, so a file written for another shape fails to load instead of loading wrongly."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from unisim import fileio


def save(directory: str, config, params, params_name: str, config_name: str) -> None:
    from flax import serialization

    fileio.makedirs(directory)
    fileio.publish(serialization.to_bytes(params), fileio.join(directory, params_name))
    fileio.publish(json.dumps(dataclasses.asdict(config)).encode(), fileio.join(directory, config_name))


def load(directory: str, config_type: type, template: Callable, params_name: str, config_name: str):
    """(config, params): `template(config)` gives parameters of the right structure to read into."""
    from flax import serialization

    fields = json.loads(fileio.read_text(fileio.join(directory, config_name)))
    config = config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    params = serialization.from_bytes(template(config), fileio.read_bytes(fileio.join(directory, params_name)))
    return config, params
