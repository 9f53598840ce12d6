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

import ast
import dataclasses
import inspect
import re
import textwrap
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


# --------------------------------------------------------------------------- reference


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One key of a configuration file, as its dataclass declares it."""

    key: str
    type: str
    default: str
    doc: str


@dataclasses.dataclass(frozen=True)
class TableDoc:
    """One table (``[mqtt]``...) of a configuration file: its keys and what it is for."""

    name: str
    doc: str
    optional: bool
    keys: list[KeyDoc]


def describe(schema: type, *, name: str = "", optional: bool = False) -> list[TableDoc]:
    """Every table and key of ``schema`` with its type, default and documentation, taken from
    the code itself: the field's docstring (a string right below it), else its comment (at
    the end of its line or on the lines right above it). Nested dataclasses become tables.
    This is what ``docs/config.md`` is generated from, so the reference cannot drift."""
    doc = inspect.cleandoc(schema.__doc__ or "")
    if doc.startswith(f"{schema.__name__}("):  # the signature dataclasses write: not a doc
        doc = ""
    notes = _class_doc_notes(doc) | _field_notes(schema)
    hints = typing.get_type_hints(schema)
    keys: list[KeyDoc] = []
    tables: list[TableDoc] = []
    for fld in dataclasses.fields(schema):
        hint = hints[fld.name]
        table, is_optional = _table_of(hint)
        full = f"{name}.{fld.name}" if name else fld.name
        if table is not None:
            tables += describe(table, name=full, optional=is_optional)
            continue
        keys.append(KeyDoc(fld.name, _type_text(hint), _default_text(fld), notes.get(fld.name, "")))
    return [TableDoc(name, " ".join(doc.split()), optional, keys), *tables]


def _table_of(hint: Any) -> tuple[type | None, bool]:
    if dataclasses.is_dataclass(hint):
        return hint, False  # type: ignore[return-value]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        tables = [a for a in args if dataclasses.is_dataclass(a)]
        if len(tables) == 1 and type(None) in args:
            return tables[0], True
    return None, False


_CLASS_DOC_KEY = re.compile(r"``(\w+)``: (.+?)(?=\s``\w+``: |\Z)", re.S)


def _class_doc_notes(doc: str) -> dict[str, str]:
    """Fields a class docstring documents as ````name``: what it is.``."""
    return {m[1]: " ".join(m[2].split()) for m in _CLASS_DOC_KEY.finditer(doc)}


def _field_notes(schema: type) -> dict[str, str]:
    """{field: its docstring or comment} read from the class's source."""
    notes: dict[str, str] = {}
    for klass in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        lines, _ = inspect.getsourcelines(klass)
        body = ast.parse(textwrap.dedent("".join(lines))).body[0]
        assert isinstance(body, ast.ClassDef)
        statements = body.body
        for i, node in enumerate(statements):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            nxt = statements[i + 1] if i + 1 < len(statements) else None
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                text = nxt.value.value
            else:
                text = _comment_at(lines, node.lineno - 1)
            if text.strip():
                notes[node.target.id] = " ".join(inspect.cleandoc(text).split())
    return notes


def _comment_at(lines: list[str], index: int) -> str:
    """The comment at the end of line ``index``, else the comment lines right above it."""
    code, sep, trailing = lines[index].partition("  #")
    if sep and code.strip() and trailing.strip():
        return trailing.strip()
    above: list[str] = []
    j = index - 1
    while j >= 0 and lines[j].strip().startswith("#"):
        above.insert(0, lines[j].strip().lstrip("#").strip())
        j -= 1
    return " ".join(above)


_TYPE_WORDS = {str: "text", int: "integer", float: "number", bool: "true/false", Path: "path"}


def _type_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        text = " or ".join(_type_text(a) for a in args)
        return text + (", optional" if len(args) < len(typing.get_args(hint)) else "")
    if origin in (list, tuple):
        (item, *_) = typing.get_args(hint) or (Any,)
        return f"list of {_type_text(item)}"
    if origin is dict:
        return "table"
    if isinstance(hint, type) and issubclass(hint, str) and hint is not str:  # StrEnum
        return "one of " + ", ".join(f"`{c}`" for c in hint)  # type: ignore[attr-defined]
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _default_text(fld: dataclasses.Field[Any]) -> str:
    if fld.default is not dataclasses.MISSING:
        value = fld.default
    elif fld.default_factory is not dataclasses.MISSING:
        value = fld.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{value!r}`"
