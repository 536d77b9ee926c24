"""Strict TOML tables -> dataclasses, shared by service configs and training recipes.

Unknown keys, wrong types and values outside a field's choices stop with one line that names
the file and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and key."""


TYPE_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "dict[str, float]": lambda v: (
        isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
    ),
    "dict[str, str]": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
}


def read_toml(path: str | Path, error: type[SettingsError] = SettingsError) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None


def build(cls, table: dict, source: str, where: str = "", error: type[SettingsError] = SettingsError):
    """Make a `cls` dataclass from a TOML table.

    Field metadata: `choices` (allowed values), `table` (the dataclass of each item of a list of
    tables), `internal` (not settable from the file).
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values = {}
    for key, value in table.items():
        name = f"{where}.{key}" if where else key
        f = fields.get(key)
        if f is None:
            raise error(f"{source}: unknown key {name} (known: {', '.join(fields)})")
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(factory):
            if not isinstance(value, dict):
                raise error(f"{source}: {name} must be a table")
            values[key] = build(factory, value, source, name, error)
        elif "table" in f.metadata:
            if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                raise error(f"{source}: {name} must be a list of tables ([[{name}]])")
            values[key] = [build(f.metadata["table"], v, source, f"{name}[{i}]", error) for i, v in enumerate(value)]
        else:
            if not TYPE_CHECKS[str(f.type)](value):  # annotations are strings (postponed evaluation)
                raise error(f"{source}: {name} = {value!r} is not a {f.type}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise error(f"{source}: {name} = {value!r} (expected one of {', '.join(choices)})")
            values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise error(f"{source}: {where or 'top level'}: {exc}") from None
