"""CIaO's answers as values: what the client returns, parsed strictly from the JSON it got.

Anything off the contract is reported through the caller's ``bad_response`` (which counts it
and returns the :class:`~siteclock.gateway.ciao.problems.BadResponse` to raise), so the client
keeps one place that counts bad answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from siteclock.gateway.ciao.problems import BadResponse

BadAnswer = Callable[..., BadResponse]
"""``bad_response(message, *, kind, after_send, status)``: count and return the error."""


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts in seconds: required, because ``requests`` has none."""

    connect_s: float
    read_s: float


@dataclass(frozen=True)
class ItemResult:
    """CIaO's answer for one submitted item."""

    created: bool
    id: str | None = None
    validity: str | None = None
    remarks: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registration:
    """A registration as lookup or search returns it (``ssin`` is kept out of ``repr``)."""

    id: str
    validity: str
    remarks: tuple[str, ...] = ()
    registration_date: str = ""
    type: str = ""
    workplace: str = ""
    ssin: str = field(default="", repr=False)


def texts(values: Any) -> tuple[str, ...]:
    """Remarks/reasons as text, whether the server sends strings or {code, description}."""
    if not isinstance(values, list):
        return ()
    out = []
    for value in values:
        if isinstance(value, Mapping):
            code = value.get("code") or value.get("type") or ""
            text = value.get("description") or value.get("detail") or value.get("title") or ""
            out.append(f"{code}: {text}" if code and text else str(code or text))
        else:
            out.append(str(value))
    return tuple(out)


def parse_results(
    body: Any, count: int, *, bad_response: BadAnswer
) -> tuple[list[ItemResult], bool]:
    """``registerInBulk``'s answer: one result per item, and whether it held fields we do not
    know (tolerated, since a newer server may add some, but the caller counts it)."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise bad_response(
            f"registerInBulk answered {len(items) if isinstance(items, list) else 'no'} "
            f"results for {count} items",
            kind="unexpected_shape",
            after_send=True,
            status=200,
        )
    unexpected = set(body) - {"items"}
    results = []
    for entry in items:
        entry = entry if isinstance(entry, dict) else {}
        created = entry.get("createdPresenceRegistration")
        refused = entry.get("notCreatedPresenceRegistration")
        if isinstance(created, dict) and "id" in created and "validity" in created:
            unexpected |= set(entry) - {"createdPresenceRegistration"}
            unexpected |= set(created) - {"id", "validity", "remarks"}
            results.append(
                ItemResult(
                    True,
                    str(created["id"]),
                    str(created["validity"]),
                    texts(created.get("remarks")),
                )
            )
        elif isinstance(refused, dict):
            reasons = texts(refused.get("reasons") or refused.get("errors"))
            results.append(ItemResult(False, reasons=reasons or ("not created",)))
        else:
            raise bad_response(
                "a registerInBulk result is neither created nor notCreated",
                kind="unexpected_shape",
                after_send=True,
                status=200,
            )
    return results, bool(unexpected)


def parse_registration(raw: Any, *, bad_response: BadAnswer) -> Registration:
    """One registration as lookup and search return it."""
    if not isinstance(raw, dict) or "id" not in raw or "validity" not in raw:
        raise bad_response(
            "registration lacks id/validity",
            kind="unexpected_shape",
            after_send=False,
            status=200,
        )
    return Registration(
        id=str(raw["id"]),
        validity=str(raw["validity"]),
        remarks=texts(raw.get("remarks")),
        registration_date=str(raw.get("registrationDate", "")),
        type=str(raw.get("type", "")),
        workplace=str(raw.get("contractualRelationshipReference", "")),
        ssin=str(raw.get("ssin", "")),
    )


def body_retry_after(resp: requests.Response) -> float | None:
    """The ``retryAfterSec`` a problem body may carry, when no header does."""
    try:
        value = json.loads(resp.content).get("retryAfterSec")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def decode_json(resp: requests.Response, *, bad_response: BadAnswer, after_send: bool) -> Any:
    """The JSON body of ``resp``; an HTML page, another content type or broken JSON is a bad
    answer (``after_send``: the server may have acted before answering so)."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "application/problem+json"):
        kind = "html" if "html" in ctype or resp.content.lstrip()[:1] == b"<" else "not_json"
        raise bad_response(
            f"HTTP {resp.status_code} answered {ctype or 'no content type'}",
            kind=kind,
            after_send=after_send,
            status=resp.status_code,
        )
    try:
        return json.loads(resp.content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad_response(
            f"HTTP {resp.status_code} body is not valid JSON",
            kind="malformed_json",
            after_send=after_send,
            status=resp.status_code,
        ) from None
