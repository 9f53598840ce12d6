"""Typed configuration files (TOML) with errors that name the file and the key.

Each role describes its settings as a frozen dataclass; :func:`load` reads one TOML table into
it. An installer on a ladder gets ``/etc/siteclock/terminal.toml: reader.port: expected text,
got 5`` rather than a traceback.

Example::

    @dataclass(frozen=True)
    class ReaderConfig:
        port: str
        repeat_window_s: float = 10.0

    cfg = load(path, TerminalConfig)   # nested dataclasses become nested tables
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable, not TOML, or has a wrong key or value."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)


def load(path: Path | str, schema: type[T]) -> T:
    """Read ``path`` (TOML) into ``schema``, a dataclass whose fields may be dataclasses."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "file is not readable by this user") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return from_mapping(raw, schema, path=path)


def _beside(config: Path | str, value: Path) -> Path:
    """A relative path in a configuration file is relative to the file's folder, never to the
    folder a service or a person happened to start in (which made a second data directory,
    and a second signing key, when a service was started from elsewhere)."""
    if value.is_absolute() or str(config).startswith("<"):
        return value
    return Path(config).resolve().parent / value


def from_mapping(raw: dict[str, Any], schema: type[T], *, path: Path | str = "<config>") -> T:
    return _build(raw, schema, path, prefix="")


def _build(raw: Any, schema: type[T], path: Path | str, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(path, prefix.rstrip("."), "expected a table")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(path, prefix + unknown[0], f"unknown key (known: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        key = prefix + name
        if name not in raw:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                raise ConfigError(path, key, "required key is missing")
            continue
        values[name] = _coerce(raw[name], hints[name], path, key)
    try:
        return schema(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, prefix.rstrip("."), str(exc)) from None


def _coerce(value: Any, hint: Any, path: Path | str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        tables = [o for o in options if dataclasses.is_dataclass(o)]
        if isinstance(value, dict) and len(tables) == 1:
            # An optional table: report the exact key inside it, not just the table's name.
            return _coerce(value, tables[0], path, key)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path, key)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(path, key, " or ".join(errors))
    if dataclasses.is_dataclass(hint):
        return _build(value, hint, path, key + ".")
    if origin in (list, tuple):
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(path, key, f"expected a list, got {value!r}")
        items = [_coerce(v, item_hint, path, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, key, f"expected a table, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(path, key, f"expected a path, got {value!r}")
        return _beside(path, Path(value))
    if isinstance(hint, type) and issubclass(hint, str) and hint is not str:  # StrEnum
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(str(c) for c in hint)  # type: ignore[attr-defined]
            raise ConfigError(path, key, f"{value!r} is not one of {choices}") from None
    bool_as_int = hint is int and isinstance(value, bool)
    if isinstance(hint, type) and not bool_as_int and isinstance(value, hint):
        return value
    names = {str: "text", int: "an integer", float: "a number", bool: "true or false"}
    raise ConfigError(path, key, f"expected {names.get(hint, hint)}, got {value!r}")
