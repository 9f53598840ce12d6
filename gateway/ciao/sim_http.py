"""The CIaO simulator's HTTP vocabulary: JSON and problem+json answers, Belgif issues, the
validation of a submitted item, and a dropped connection.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from datetime import datetime
from typing import Any

from flask import Response, request

from siteclock.gateway.ciao.profile import Profile
from siteclock.protocol import WORKPLACE_RE

PROBLEM = "urn:problem-type:belgif:"
ISSUE = PROBLEM + "input-validation:"
ENTERPRISE_RE = re.compile(r"^[01]\d{9}$")


def json_response(
    status: int, body: Any, *, problem: bool = False, headers: dict[str, str] | None = None
) -> Response:
    ctype = "application/problem+json" if problem else "application/json"
    return Response(json.dumps(body), status, headers=headers, content_type=ctype)


def problem_response(
    status: int, name: str, title: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return json_response(
        status,
        {"type": PROBLEM + name, "status": status, "title": title, **extra},
        problem=True,
        headers=headers,
    )


def input_issue(
    kind: str,
    title: str,
    name: str,
    value: Any = None,
    *,
    where: str = "body",
    detail: str | None = None,
) -> dict[str, Any]:
    issue = {"type": ISSUE + kind, "title": title, "in": where, "name": name}
    if value is not None and not name.endswith("ssin"):  # never echo an INSS
        issue["value"] = value
    if detail is not None:
        issue["detail"] = detail
    return issue


def bad_request(issues: list[dict[str, Any]]) -> Response:
    return problem_response(
        400, "badRequest", "Bad Request", detail="The input message is incorrect", issues=issues
    )


def oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(status, {"error": error, "error_description": description})


def place_issues(place: Any, at: str, address_fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """What is wrong with a placeOfWork: coordinates in range, or an address with every field
    the profile requires (each missing field is its own issue, named)."""
    coords = place.get("coordinates") if isinstance(place, dict) else None
    address = place.get("address") if isinstance(place, dict) else None
    if isinstance(coords, dict):
        lat, lon = coords.get("latitude"), coords.get("longitude")
        if (
            isinstance(lat, int | float)
            and isinstance(lon, int | float)
            and -90 <= lat <= 90
            and -180 <= lon <= 180
        ):
            return []
        return [input_issue("schemaViolation", "coordinates out of range", f"{at}.coordinates")]
    if not isinstance(address, dict):
        return [input_issue("schemaViolation", "placeOfWork needs coordinates or address", at)]
    return [
        input_issue(
            "schemaViolation",
            "required",
            f"{at}.address.{name}",
            detail=f"an address needs {', '.join(address_fields)}",
        )
        for name in address_fields
        if not (isinstance(address.get(name), str) and address[name].strip())
    ]


def drop_connection() -> Response:
    """Close the client's connection without a response (a network drop)."""
    sock = request.environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone: the effect we wanted
            sock.shutdown(socket.SHUT_RDWR)
    return Response(b"", 500)


def item_issues(index: int, item: Any, profile: Profile) -> list[dict[str, Any]]:
    """What is wrong with one ``registerInBulk`` item, as Belgif input-validation issues."""
    at = f"items[{index}]"
    if not isinstance(item, dict):
        return [input_issue("schemaViolation", "item must be an object", at)]
    allowed = {
        "registrationDate",
        "ssin",
        "type",
        "employer",
        "placeOfWork",
        "contractualRelationshipReference",
    }
    issues = [
        input_issue("unknownInput", "unknown field", f"{at}.{k}") for k in item if k not in allowed
    ]
    issues += [
        input_issue("schemaViolation", "required", f"{at}.{k}")
        for k in sorted(allowed - {"placeOfWork"})
        if k not in item
    ]
    if issues:
        return issues
    if parse_time(item["registrationDate"]) is None:
        issues.append(
            input_issue(
                "schemaViolation",
                "not an RFC 3339 date-time with offset",
                f"{at}.registrationDate",
                item["registrationDate"],
            )
        )
    if not isinstance(item["ssin"], str) or not re.fullmatch(r"\d{11}", item["ssin"]):
        issues.append(input_issue("schemaViolation", "ssin must be 11 digits", f"{at}.ssin"))
    accepted = profile.accepted_types()
    if item["type"] not in accepted:
        issues.append(
            input_issue(
                "schemaViolation",
                "unknown type",
                f"{at}.type",
                item["type"],
                detail="type must be one of " + ", ".join(sorted(accepted)),
            )
        )
    employer = item["employer"]
    ok_employer = (
        isinstance(employer, dict)
        and len(employer) == 1
        and (
            ENTERPRISE_RE.match(str(employer.get("enterpriseNumber", "")))
            or re.fullmatch(r"[A-Z]{2}[0-9A-Z+*]{2,12}", str(employer.get("foreignVatNumber", "")))
        )
    )
    if not ok_employer:
        issues.append(
            input_issue(
                "schemaViolation",
                "employer needs enterpriseNumber or foreignVatNumber",
                f"{at}.employer",
            )
        )
    if not WORKPLACE_RE.match(str(item["contractualRelationshipReference"])):
        issues.append(
            input_issue(
                "schemaViolation",
                "not a Declaration of Works reference",
                f"{at}.contractualRelationshipReference",
            )
        )
    place = item.get("placeOfWork")
    if place is not None:
        issues += place_issues(place, f"{at}.placeOfWork", profile.address_fields)
    return issues


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
