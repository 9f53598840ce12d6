"""CIaO's failures, as the gateway tells them apart: the error classes and problem details.

CIaO has no idempotency key, so what a failure means decides what the relay may do next (see
:mod:`siteclock.gateway.ciao.client`): :class:`Transient` (certainly not acted on: retry),
:class:`Ambiguous` (a POST that may have been committed: search first), :class:`BadResponse`
(off contract), :class:`Permanent` (refused for good, with the whole problem details),
:class:`AuthError` (our credentials) and :class:`ShuttingDown`.

Problem details follow RFC 9457 with the Belgian REST guide's ``issues[]``;
:func:`whole_problem` keeps what a row needs and :func:`describe_problem` says it in one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

PROBLEM_PREFIX = "urn:problem-type:belgif:"
KNOWN_PROBLEMS = frozenset(
    PROBLEM_PREFIX + name
    for name in (
        "badRequest",
        "noAccessToken",
        "invalidAccessToken",
        "expiredAccessToken",
        "missingScope",
        "missingPermission",
        "resourceNotFound",
        "tooManyRequests",
        "internalServerError",
        "serviceUnavailable",
        "payloadTooLarge",
    )
)
_ITEM_INDEX = re.compile(r"^items\[(\d+)\]")


class CiaoError(Exception):
    """Base of every failure of a CIaO call. ``reason`` is a short code that is counted."""

    transient = False
    permanent = False
    reason = "error"

    def __init__(
        self,
        detail: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        if reason is not None:
            self.reason = reason
        self.status = status
        self.retry_after = retry_after


class Transient(CiaoError):
    """The server did not act on the request; sending it again is safe."""

    transient = True
    reason = "transient"


class Ambiguous(CiaoError):
    """A POST may or may not have been committed: search before sending it again."""

    reason = "ambiguous"


class BadResponse(CiaoError):
    """The answer does not follow the contract. ``after_send``: the server may have acted."""

    reason = "bad_response"

    def __init__(self, detail: str, *, kind: str, after_send: bool, status: int | None) -> None:
        super().__init__(detail, reason=kind, status=status)
        self.kind = kind
        self.after_send = after_send


class Permanent(CiaoError):
    """Refused for good. ``problem`` is the problem details as received (status, type, title,
    detail, issues); ``issues`` its issues[]; ``item_indexes`` the items they name
    (``items[3].ssin`` -> 3), so the other items of a batch can go again."""

    permanent = True
    reason = "permanent"

    def __init__(
        self,
        detail: str,
        *,
        reason: str,
        status: int | None,
        issues: Sequence[Mapping[str, Any]] = (),
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, reason=reason, status=status)
        self.issues = [dict(i) for i in issues if isinstance(i, Mapping)]
        self.problem = whole_problem(problem or {}, status, self.issues)
        self.item_indexes = sorted(
            {
                int(m.group(1))
                for issue in self.issues
                if isinstance(issue, Mapping)
                and (m := _ITEM_INDEX.match(str(issue.get("name", ""))))
            }
        )


class AuthError(CiaoError):
    """Our credentials were refused (token endpoint ``invalid_client``, API 403): a configuration
    problem, not an event's. Not retried by the client (the answer will not change by itself),
    not permanent for any event either: the relay keeps the events queued and raises an alert."""

    auth = True
    reason = "auth"


class ShuttingDown(CiaoError):
    """The gateway is stopping; the call was not made."""


PROBLEM_FIELDS = ("status", "type", "title", "detail", "instance")
ISSUE_FIELDS = ("type", "title", "in", "name", "value", "detail")


def whole_problem(
    body: Mapping[str, Any], status: int | None, issues: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The problem details to keep with a row: its standard fields and every issue's."""
    problem = {k: body[k] for k in PROBLEM_FIELDS if body.get(k) is not None}
    if status is not None:
        problem.setdefault("status", status)
    problem["issues"] = [
        {k: issue[k] for k in ISSUE_FIELDS if issue.get(k) is not None} for issue in issues
    ]
    return problem


def describe_problem(problem: Mapping[str, Any]) -> str:
    """One line for people: title/detail, then each issue's place, title, detail and value."""
    head = str(problem.get("detail") or problem.get("title") or problem.get("type") or "")
    parts = [head] if head else []
    for issue in problem.get("issues") or ():
        where = str(issue.get("name", ""))
        if issue.get("in") and issue.get("in") != "body":
            where = f"{issue['in']} {where}".strip()
        text = "; ".join(str(issue[k]) for k in ("title", "detail") if issue.get(k))
        if "value" in issue:
            text += f" (value {issue['value']!r})"
        parts.append(f"{where}: {text}" if where else text)
    return " | ".join(parts)
