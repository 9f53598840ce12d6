"""Issue 11, Seen 9: documents that work. Every ``siteclock`` command a document shows uses
only flags its parser has; no document cites a file the repository does not hold; the wiring
notes name only configuration keys that exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siteclock.config import describe
from siteclock.terminal.config import TerminalConfig
from tests.support.doc_commands import commands_in_markdown, unknown_flags

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "hw" / "pi").glob("*.md")]
)
SHIPPED = DOCS + sorted((REPO / "hw" / "pi").glob("*.service")) + [REPO / "hw/pi/install.sh"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_use_only_flags_that_exist(doc: Path) -> None:
    commands = commands_in_markdown(doc.read_text())
    assert unknown_flags(commands) == []


def test_the_check_catches_a_flag_that_does_not_exist() -> None:
    text = "```sh\nsiteclock broker-config --out x \\\n    --run-as-root mosquitto\n```\n"
    assert unknown_flags(commands_in_markdown(text)) == ["siteclock broker-config: --run-as-root"]


def test_no_document_cites_a_file_outside_the_repository() -> None:
    held = {p.name for p in REPO.rglob("*.md") if not {".venv", "build"} & set(p.parts)}
    cited = {
        (str(doc.relative_to(REPO)), name)
        for doc in SHIPPED
        for name in re.findall(r"[\w.-]+\.md\b", doc.read_text())
        if name not in held
    }
    assert cited == set()
    for doc in SHIPPED:
        assert "/work/" not in doc.read_text(), doc


def test_wiring_notes_name_only_configuration_keys_that_exist() -> None:
    """Seen 9: WIRING.md named a button section the terminal's configuration does not have."""
    keys = {f"[{t.name}] {k.key}" for t in describe(TerminalConfig) for k in t.keys}
    tables = {f"[{t.name}]" for t in describe(TerminalConfig) if t.name}
    text = (REPO / "hw" / "pi" / "WIRING.md").read_text()
    named = re.findall(r"`(\[[a-z_.]+\](?: [a-z_]+)?)", text)
    assert named, "WIRING.md names no setting"
    assert [n for n in named if n not in keys and n not in tables] == []
