"""A printable label for a provisioned terminal: a QR code naming the terminal and its worksite.

Stuck on the enclosure, it lets anyone (employer, inspector, the next installer) scan which
terminal this is, which Declaration of Works it is bound to, and which key it signs with, and
read the same in plain text underneath. The QR code carries a small URI that
:func:`parse_label` reads back::

    siteclock:terminal?id=t-hall-01&workplace=1Y1003SQ5VSSZ&kid=3f2a9c0d1e2b4a5f

Example::

    write_label(Path("label.svg"), LabelInfo("t-hall-01", "1Y1003SQ5VSSZ", kid, "Hall A"))
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import segno

from siteclock.protocol import check_terminal_id, check_workplace

SCHEME = "siteclock"
QR_SCALE = 4
TEXT_HEIGHT = 16


@dataclass(frozen=True)
class LabelInfo:
    terminal_id: str
    workplace: str
    kid: str
    site_name: str = ""

    def uri(self) -> str:
        query = urlencode({"id": self.terminal_id, "workplace": self.workplace, "kid": self.kid})
        return f"{SCHEME}:terminal?{query}"


def parse_label(text: str) -> LabelInfo:
    """Read back what a label's QR code carries; ``ValueError`` if it is not one of ours."""
    parts = urlsplit(text)
    if parts.scheme != SCHEME or parts.path != "terminal":
        raise ValueError(f"{text!r} is not a siteclock terminal label")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    try:
        return LabelInfo(
            check_terminal_id(query["id"]), check_workplace(query["workplace"]), query["kid"]
        )
    except KeyError as exc:
        raise ValueError(f"label lacks {exc.args[0]}") from None


def qr_code(info: LabelInfo) -> segno.QRCode:
    return segno.make(info.uri(), error="m")


def label_svg(info: LabelInfo) -> str:
    """An SVG label: the QR code with the terminal, the workplace and the key id under it."""
    qr = qr_code(info)
    inner = qr.svg_inline(scale=QR_SCALE)
    width, height = qr.symbol_size(scale=QR_SCALE)
    lines = [
        f"terminal {info.terminal_id}",
        f"DoW {info.workplace}",
        f"key {info.kid}",
    ]
    if info.site_name:
        lines.insert(1, info.site_name)
    label_w = max(width, 8 * max(len(line) for line in lines) + 8)
    label_h = height + TEXT_HEIGHT * len(lines) + 8
    texts = "".join(
        f'<text x="{label_w // 2}" y="{height + TEXT_HEIGHT * (i + 1)}" text-anchor="middle" '
        f'font-family="monospace" font-size="13">{html.escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w}" height="{label_h}" '
        f'viewBox="0 0 {label_w} {label_h}">'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<g transform="translate({(label_w - width) // 2},0)">{inner}</g>{texts}</svg>\n'
    )


def write_label(path: Path, info: LabelInfo) -> Path:
    """Write ``.svg`` (QR code and text) or ``.png`` (QR code only) by the file's suffix."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        buffer = io.BytesIO()
        qr_code(info).save(buffer, kind="png", scale=8)
        path.write_bytes(buffer.getvalue())
    else:
        path.write_text(label_svg(info))
    return path
