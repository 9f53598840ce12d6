"""The shared TOML loader names the file and the key in every error."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from siteclock.config import ConfigError, load


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True)
class Inner:
    port: int
    ratio: float = 1.0


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    mode: Mode = Mode.SAFE
    path: Path | None = None
    tags: list[str] = field(default_factory=list)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_a_good_file_loads_into_typed_values(tmp_path):
    cfg = load(
        write(
            tmp_path,
            'name = "a"\nmode = "fast"\npath = "/x"\ntags = ["t"]\n[inner]\nport = 5\nratio = 2\n',
        ),
        Outer,
    )
    assert cfg == Outer("a", Inner(5, 2.0), Mode.FAST, Path("/x"), ["t"])


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('name = "a"\n', "inner", "missing"),
        ("name = 5\n[inner]\nport = 1\n", "name", "expected text"),
        ('name = "a"\n[inner]\nport = "1"\n', "inner.port", "expected an integer"),
        ('name = "a"\n[inner]\nport = true\n', "inner.port", "expected an integer"),
        ('name = "a"\n[inner]\nport = 1\nprot = 2\n', "inner.prot", "unknown key"),
        ('name = "a"\nmode = "reckless"\n[inner]\nport = 1\n', "mode", "not one of fast, safe"),
        ('name = "a"\ninner = 3\n', "inner", "expected a table"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, Outer)
    assert info.value.key == key
    assert words in info.value.problem
    assert str(path) in str(info.value)


def test_broken_toml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "name = \n"), Outer)
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml", Outer)


@dataclass(frozen=True)
class WithOptionalTable:
    inner: Inner | None = None


def test_an_optional_table_reports_the_key_inside_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, '[inner]\nport = "x"\n'), WithOptionalTable)
    assert info.value.key == "inner.port"
    assert load(write(tmp_path, ""), WithOptionalTable).inner is None
