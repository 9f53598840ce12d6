"""Issue 11, Seen 2 and 3: every configuration key documented in one page generated from the
code (``docs/config.md``), which fails this suite when it drifts; the terminal's example
configuration carries the roster keys.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from siteclock.app import config_doc
from siteclock.config import describe, from_mapping
from siteclock.terminal import config as terminal_config

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "config.md"


@dataclass(frozen=True)
class _Inner:
    """The inner table."""

    depth: int = 3  # trailing comment
    # a comment above
    # on two lines
    width: float = 1.5


@dataclass(frozen=True)
class _Outer:
    """``name``: what the class doc says about it."""

    name: str
    path: Path | None = None
    """A docstring below the field."""
    inner: _Inner = field(default_factory=_Inner)
    extra: _Inner | None = None


def test_describe_takes_each_kind_of_field_documentation() -> None:
    top, inner, extra = describe(_Outer)
    assert [t.name for t in (top, inner, extra)] == ["", "inner", "extra"]
    assert (inner.optional, extra.optional) == (False, True)
    docs = {k.key: (k.type, k.default, k.doc) for k in top.keys + inner.keys}
    assert docs == {
        "name": ("text", "required", "what the class doc says about it."),
        "path": ("path, optional", "unset", "A docstring below the field."),
        "depth": ("integer", "`3`", "trailing comment"),
        "width": ("number", "`1.5`", "a comment above on two lines"),
    }


def test_docs_config_md_is_what_the_code_says() -> None:
    """Seen 2: the reference page is generated; regenerate with ``make docs``."""
    assert PAGE.read_text() == config_doc.render(), "docs/config.md drifted: run `make docs`"


def test_check_mode_catches_a_drifted_page(tmp_path: Path) -> None:
    page = tmp_path / "config.md"
    page.write_text(config_doc.render().replace("`8884`", "`1883`"))
    assert config_doc.cli(["--check", "--out", str(page)]) == 1
    assert config_doc.cli(["--out", str(page)]) == 0
    assert config_doc.cli(["--check", "--out", str(page)]) == 0


@pytest.mark.parametrize(("file", "schema", "_intro"), config_doc.FILES)
def test_every_key_of_every_file_has_a_description(file: str, schema: type, _intro: str) -> None:
    """Seen 2: no key is learnt one error at a time: each says what it is."""
    silent = [
        f"{t.name}.{k.key}".lstrip(".") for t in describe(schema) for k in t.keys if not k.doc
    ]
    assert silent == [], f"{file}: keys without a docstring or comment: {silent}"


def test_page_lists_the_roster_keys_and_the_broker_keys() -> None:
    text = PAGE.read_text()
    for key in ("`gateway_keys_file`", "`share_group`", "`password_file`", "`unsynced_hold_s`"):
        assert key in text


def test_terminal_example_config_loads_and_carries_the_roster_keys() -> None:
    """Seen 3: the terminal's copy of the gateway's roster-signing keys is in the example."""
    doc = terminal_config.__doc__ or ""
    block = re.search(r"::\n\n(.*?)\n\n\S", doc, re.S)
    assert block is not None
    raw = textwrap.dedent(block.group(1))
    cfg = from_mapping(tomllib.loads(raw), terminal_config.TerminalConfig)
    assert cfg.uplink is not None
    assert cfg.uplink.gateway_keys_file is not None
