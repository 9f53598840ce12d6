"""Commands written in documents and scripts, checked against the real command line.

``unknown_flags(["siteclock provision run --lat 50 ..."])`` returns ``["siteclock provision
run: --lat"]`` when no parser on the command's path (``siteclock provision``, ``siteclock
provision run``) knows the flag: each parser's ``--help`` is the authority, so a document
cannot suggest a flag that does not exist.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable
from functools import cache

from siteclock.cli import COMMANDS, main

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
WORD = re.compile(r"^[a-z][a-z0-9-]*$")


@cache
def help_text(path: tuple[str, ...]) -> str | None:
    """What ``siteclock <path> --help`` prints, or None if that is not a command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*path, "--help"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return out.getvalue() if code == 0 else None


def command_path(words: list[str]) -> list[tuple[str, ...]]:
    """The parsers a command goes through: ``siteclock provision token create --db x`` ->
    [(provision,), (provision, token), (provision, token, create)]."""
    if not words or words[0] not in COMMANDS:
        return []
    path = [(words[0],)]
    for word in words[1:]:
        if word.startswith("-") or not WORD.match(word):
            continue
        candidate = (*path[-1], word)
        text = help_text(candidate)
        if text is not None and text != help_text(path[-1]):
            path.append(candidate)
    return path


def unknown_flags(commands: Iterable[str]) -> list[str]:
    problems = []
    for command in commands:
        words = command.split()
        if words and words[0] == "siteclock":
            words = words[1:]
        path = command_path(words)
        if not path:
            problems.append(f"siteclock {' '.join(words[:1])}: not a command")
            continue
        helps = " ".join(help_text(p) or "" for p in path)
        for flag in FLAG.findall(command):
            if flag in ("--help", "--version"):
                continue
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps):
                problems.append(f"siteclock {' '.join(path[-1])}: {flag}")
    return problems


def commands_in_markdown(text: str) -> list[str]:
    """``siteclock ...`` commands in a Markdown text: in fenced blocks (``\\`` continuations
    joined, a trailing ``# comment`` dropped) and in inline code spans."""
    found: list[str] = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            found += _commands_in_line(line.split(" #")[0])
    for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S)):
        found += _commands_in_line(span)
    return found


def _commands_in_line(line: str) -> list[str]:
    out = []
    for m in re.finditer(r"(?<![\w/.-])siteclock ([a-z][a-z-]*)([^|;&`]*)", line):
        if m.group(1) in COMMANDS:
            out.append(f"siteclock {m.group(1)}{m.group(2)}".rstrip())
    return out
