"""Structured, quiet logging with a privacy guard.

Every record is one line of ``key=value`` pairs (``event=... terminal=... reason=...``), easy to
grep on a Pi and to ship to a log store. Pass structured data as
``log.info("tap saved", extra=fields(seq=12, kind="in"))``. A filter on the root handler masks
anything shaped like an INSS/BIS number (11 digits, with or without the usual punctuation)
before it can reach a log line: the INSS must never be logged, even by accident. The shape is
the parser's own (:mod:`siteclock.inss_shape`): every written form it accepts is masked.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from siteclock.inss_shape import REDACTED, redact
from siteclock.inss_shape import WRITTEN_INSS_RE as INSS_PATTERN

__all__ = ["INSS_PATTERN", "REDACTED", "KeyValueFormatter", "fields", "redact", "setup"]


def fields(**values: Any) -> dict[str, Any]:
    return {"fields": values}


class KeyValueFormatter(logging.Formatter):
    """One ``key=value`` line per record, with INSS-shaped numbers masked in the whole line.

    Redacting the finished line (rather than mutating the record in a filter) leaves the record
    intact for any other handler, and catches a number wherever it hides: message, arguments,
    fields or traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._line(record))

    def _line(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in (getattr(record, "fields", None) or {}).items():
            parts.append(f"{key}={_quote(str(value))}")
        if record.exc_info:
            parts.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup(level: str | int = "INFO", stream: Any = None) -> None:
    """Configure the root logger once: key=value lines on stderr, INSS redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # nfcpy logs "no reader available" at ERROR on every reopen attempt; hw.nfc_reader already
    # turns those failures into one reader-fault status with its cause and the next step.
    logging.getLogger("nfc").setLevel(logging.CRITICAL)
