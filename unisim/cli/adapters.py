"""The dataset adapters: what each reads, its controls, and its options (`--adapter_option KEY=VALUE`)."""

from __future__ import annotations

import dataclasses


def add_arguments(parser) -> None:
    pass


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "(none)" if value is None else str(value)


def run(_args, _rest) -> int:
    from unisim.adapters import registry

    for name, cls in registry.all_adapters().items():
        fields = dataclasses.fields(cls.Options)
        controls = ("set by its options" if cls.controls_from_options
                    else ", ".join(cls.control_names) or "none (text only)")
        print(f"{name}\n  {cls.description}\n  controls: {controls}")
        for field in fields:
            about = field.metadata.get("help", "")
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            default = "required" if required else f"default {_shown(field.default)}"
            shown = "" if "default" in about else f" ({default})"  # the help already states it
            print(f"  --adapter_option {field.name}=…{shown}: {about}")
    return 0
