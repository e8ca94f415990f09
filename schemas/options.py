"""Options declared once: a dataclass field carries its default and help, and everything else is generated from it —
the command-line flags (`add_flags`, `from_flags`), the documentation tables (`markdown_table`), and the parsing of
`KEY=VALUE` strings or JSON values (`parse_options`, adapters' `--adapter_option`).

    @dataclasses.dataclass(frozen=True)
    class FrameSpec:
        height: int = option(192, "stored frame height")
        fit: str = option("crop", "fit to the stored size by centre crop or padding", choices=("crop", "pad"))

A nested dataclass field is flattened into its own fields' flags (`flatten=True`); an optional nested dataclass
(`EncoderSettings | None`) exists when its `presence` field's flag is given. `flag` renames a field's flag where
the command line has kept an older name; `values` maps choices to values (`{"auto": None, "on": True}`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

_REQUIRED = object()


def option(default: Any = _REQUIRED, help: str = "", *, flag: str | None = None,
           choices: tuple | None = None, values: Mapping[str, Any] | None = None, metavar: str | None = None,
           flatten: bool = False, presence: str | None = None, cli: bool = True, nargs: str | None = None,
           repeat: bool = False, default_factory=None) -> Any:
    """A dataclass field with its help and how it appears on the command line.

    `default` omitted: the flag is required. `cli=False`: not a flag (set by the command from other flags).
    A `tuple[str, ...]` field takes comma-separated values, or with `nargs` ("*", "+") several words after its
    flag, or with `repeat` one value per repetition of its flag."""
    metadata = {"help": help, "flag": flag, "choices": choices, "values": dict(values) if values else None,
                "metavar": metavar, "flatten": flatten, "presence": presence, "cli": cli, "nargs": nargs,
                "repeat": repeat}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is _REQUIRED:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------- values


def coerce(value: Any, kind: Any, where: str) -> Any:
    """A command-line string (or a JSON value) → the field's declared type: str, int, float, bool, tuple[str, ...],
    or an Optional of one of them ("" and "none" give None)."""
    if _optional(kind) is not None:
        kind = _optional(kind)
        # "" is a string's own value (e.g. an empty --domain_prefix), so only other types read "" as None.
        if value is None or (isinstance(value, str) and value.lower() in ("", "none") and kind is not str):
            return None
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (str, list, tuple)):
            raise ValueError(f"{where}: expected a list or comma-separated text, got {value!r}")
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(item).strip() for item in items if str(item).strip())
    if isinstance(value, (list, tuple, dict)) and kind in (str, int, float, bool):
        raise ValueError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    try:
        result = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return result


def _optional(kind: Any) -> Any | None:
    """T for `T | None` / `Optional[T]`, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            return args[0]
    return None


def parse_options(options_type: type, values: Mapping[str, Any] | None, where: str, what: str = "option") -> Any:
    """`values` ({name: str or JSON value}) → an instance of `options_type`; unknown names are an error."""
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    unknown = sorted(set(values or {}) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"{where}: unknown {what}(s) {', '.join(unknown)}; its options: {known}")
    hints = typing.get_type_hints(options_type)
    return options_type(**{k: coerce(v, hints[k], f"{where} option {k}") for k, v in (values or {}).items()})


# ----------------------------------------------------------------------------------------------- flags


@dataclasses.dataclass(frozen=True)
class _Flag:
    path: tuple[str, ...]  # field names from the top dataclass down
    name: str  # the flag, without dashes
    field: dataclasses.Field
    kind: Any  # the declared type
    required: bool  # the flag must be given (a field without default, outside an optional group)


def _flags(cls: type, prefix: tuple[str, ...] = (), optional_group: bool = False) -> list[_Flag]:
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        if not field.metadata or not field.metadata.get("cli", True):  # not declared with `option`, or not a flag
            continue
        kind = hints[field.name]
        if field.metadata.get("flatten"):
            out += _flags(_optional(kind) or kind, prefix + (field.name,),
                          optional_group or bool(field.metadata.get("presence")))
            continue
        out.append(_Flag(prefix + (field.name,), field.metadata.get("flag") or field.name, field, kind,
                         _default(field) is _REQUIRED and not optional_group))
    return out


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return _REQUIRED


def _shown_default(flag: _Flag) -> str:
    value = _default(flag.field)
    values = flag.field.metadata.get("values")
    if values:
        value = next((k for k, v in values.items() if v == value), value)
    if value is _REQUIRED:
        return "required" if flag.required else "none"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def add_flags(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """One `--flag` per (flattened) field of `cls`, with its help and default."""
    for flag in _flags(cls):
        meta = flag.field.metadata
        kind = _optional(flag.kind) or flag.kind
        help_text = meta.get("help", "")
        default = _default(flag.field)
        said = default is None and "(none" in help_text  # the help already says what none means
        shown = "" if default is _REQUIRED or said else f" (default: {_shown_default(flag)})"
        kwargs: dict[str, Any] = {"dest": "__".join(flag.path), "help": help_text + shown,
                                  "default": argparse.SUPPRESS}
        if flag.required:
            kwargs["required"] = True
        if meta.get("values"):
            kwargs["choices"] = tuple(meta["values"])
        elif meta.get("nargs") or meta.get("repeat"):
            if meta.get("nargs"):
                kwargs["nargs"] = meta["nargs"]
            else:
                kwargs["action"] = "append"
            kwargs["metavar"] = meta.get("metavar") or flag.name.upper()
        elif kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            kwargs["type"] = _parser_of(kind, f"--{flag.name}")
            kwargs["metavar"] = meta.get("metavar") or (None if meta.get("choices") else flag.name.upper())
        parser.add_argument(f"--{flag.name}", **kwargs)


def _parser_of(kind: Any, where: str):
    def parse(text: str) -> Any:
        try:
            return coerce(text, kind, where)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def from_flags(cls: type, namespace: argparse.Namespace, **overrides: Any) -> Any:
    """The `cls` instance the parsed flags describe: given flags, else the fields' defaults; `overrides` set
    top-level fields the command computes itself (e.g. from flags that are not fields)."""
    given = vars(namespace)
    return _build(cls, (), given, overrides)


def _build(cls: type, prefix: tuple[str, ...], given: dict[str, Any], overrides: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        path = prefix + (field.name,)
        if not prefix and field.name in overrides:
            kwargs[field.name] = overrides[field.name]
            continue
        meta = field.metadata
        if not meta or not meta.get("cli", True):
            continue
        if meta.get("flatten"):
            nested = _optional(hints[field.name]) or hints[field.name]
            presence = meta.get("presence")
            if presence and "__".join(path + (presence,)) not in given:
                continue  # an optional group whose defining flag was not given: keep the field's default (None)
            kwargs[field.name] = _build(nested, path, given, {})
            continue
        key = "__".join(path)
        if key in given:
            value = given[key]
            if meta.get("values"):
                value = meta["values"][value]
            elif meta.get("nargs") or meta.get("repeat"):
                value = tuple(value)
            kwargs[field.name] = value
    return cls(**kwargs)


def markdown_table(cls: type) -> str:
    """The flags of `cls` as a Markdown table (flag, default, help): what the docs print."""
    rows = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for flag in _flags(cls):
        meta = flag.field.metadata
        choices = meta.get("values") or meta.get("choices")
        about = meta.get("help", "") + (f" ({' / '.join(map(str, choices))})" if choices else "")
        about = about.replace("|", "\\|")
        rows.append(f"| `--{flag.name}` | {_shown_default(flag)} | {about} |")
    return "\n".join(rows) + "\n"
