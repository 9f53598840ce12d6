"""Which workplace a terminal is bound to: the Declaration of Works reference and its location.

An installer gives the Declaration of Works (DoW, AVW/DDT) in one of two ways:

* its **13-character reference**, typed from the paper (``1Y1003SQ5VSSZ``): upper-case letters
  and digits, never ``I`` or ``O``. Spaces, dots and dashes the installer adds are ignored and
  lower case is accepted; anything else gets an error saying what is wrong (length, a letter I/O
  that is probably a 1/0, a character that cannot occur);
* the **URL of its QR code**. What that QR code carries is documented only as the DoW's
  "technical number", and the mapping from that number to the 13-character reference is *not
  public*. So we accept a URL only when it is an ``https`` URL
  of an NSSO host (``socialsecurity.be``, ``rsz.be``, ``onss.be`` or a subdomain) **and** it
  carries exactly one 13-character reference, in a query value or a path segment. A URL of any
  other service is refused with an error that says so; an NSSO URL without a readable reference
  asks the installer to type the reference printed on the DoW instead. When the NSSO documents
  the mapping, it belongs in :func:`reference_from_url`, and nowhere else.

CIaO also needs where the workplace is: coordinates (WGS 84) or a Belgian address.

Example::

    ref = parse_reference("1y10-03sq-5vssz")          # '1Y1003SQ5VSSZ'
    ref = parse_workplace_input("https://www.socialsecurity.be/ciao?ref=1Y1003SQ5VSSZ")
    where = Coordinates.parse("50.8503, 4.3517")
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote, urlsplit

from siteclock.protocol import WORKPLACE_RE

REFERENCE_LENGTH = 13
NSSO_HOSTS: tuple[str, ...] = ("socialsecurity.be", "rsz.be", "onss.be")
"""Hosts (and their subdomains) whose QR-code URLs we read a reference from."""

# Belgium with a margin: a point outside is a typo or swapped latitude/longitude.
BELGIUM_LAT = (49.45, 51.55)
BELGIUM_LON = (2.5, 6.45)

_TYPED_SEPARATORS = re.compile(r"[\s.\-_/]")
_ALLOWED = set("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")


class WorkplaceError(ValueError):
    """The workplace an installer gave cannot be used; the message says why and what to do."""


class ForeignQrCode(WorkplaceError):
    """A URL (QR code) of a service that is not the NSSO's: not a Declaration of Works."""


def parse_reference(text: str) -> str:
    """Return the 13-character DoW reference typed in ``text``, or raise :class:`WorkplaceError`."""
    raw = (text or "").strip()
    if not raw:
        raise WorkplaceError("no Declaration of Works reference given")
    value = _TYPED_SEPARATORS.sub("", raw).upper()
    if WORKPLACE_RE.match(value):
        return value
    problems = []
    if len(value) != REFERENCE_LENGTH:
        problems.append(f"it has {len(value)} characters, a reference has {REFERENCE_LENGTH}")
    wrong = sorted(set(value) - _ALLOWED)
    letters_io = [c for c in wrong if c in "IO"]
    others = [c for c in wrong if c not in "IO"]
    if letters_io:
        problems.append(
            "the letters I and O never occur in a reference (read them as the digits 1 and 0)"
        )
    if others:
        problems.append(f"it contains {' '.join(repr(c) for c in others)} (only A-Z and 0-9)")
    _fail(raw, problems)


def _fail(raw: str, problems: list[str]) -> NoReturn:
    detail = "; ".join(problems) or "it is not a reference"
    raise WorkplaceError(f"{raw!r} is not a Declaration of Works reference: {detail}")


def is_nsso_host(host: str, trusted: Sequence[str] = NSSO_HOSTS) -> bool:
    host = host.lower().rstrip(".")
    return any(host == t or host.endswith("." + t) for t in trusted)


def reference_from_url(url: str, *, trusted_hosts: Sequence[str] = NSSO_HOSTS) -> str:
    """The DoW reference carried by an NSSO QR-code URL (see the module docstring)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError as exc:
        raise WorkplaceError(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise WorkplaceError(f"{url!r} is not a web address (expected https://...)")
    if not is_nsso_host(host, trusted_hosts):
        raise ForeignQrCode(
            f"this QR code points to {host}, not to the NSSO ({', '.join(trusted_hosts)}): "
            "it is not a Declaration of Works. Scan the QR code on the Declaration of Works, "
            "or type its 13-character reference."
        )
    if parts.scheme.lower() != "https":
        raise WorkplaceError(f"{url!r} is not https: refusing an unencrypted NSSO address")
    found = sorted(set(_candidates(parts.path, parts.query, parts.fragment)))
    if len(found) == 1:
        return found[0]
    if not found:
        raise WorkplaceError(
            "this NSSO address carries no 13-character Declaration of Works reference that "
            "siteclock can read (its QR codes may carry a technical number whose mapping to the "
            "reference is not published). Type the reference printed on the Declaration of Works."
        )
    raise WorkplaceError(
        f"this NSSO address carries several possible references ({', '.join(found)}); "
        "type the one printed on the Declaration of Works"
    )


def _candidates(path: str, query: str, fragment: str) -> Iterable[str]:
    values = [unquote(s) for s in path.split("/")]
    for q in (query, fragment):
        values += [v for _, v in parse_qsl(q, keep_blank_values=True)]
    # Case-sensitive on purpose: references are upper case, and upper-casing URL tokens would
    # turn random 13-character identifiers into false matches.
    return (v for v in values if WORKPLACE_RE.match(v))


def parse_workplace_input(text: str, *, trusted_hosts: Sequence[str] = NSSO_HOSTS) -> str:
    """A typed reference or a scanned QR-code URL -> the 13-character reference."""
    stripped = (text or "").strip()
    if "://" in stripped or stripped.lower().startswith(("http:", "https:", "www.")):
        if stripped.lower().startswith("www."):
            stripped = "https://" + stripped
        return reference_from_url(stripped, trusted_hosts=trusted_hosts)
    return parse_reference(stripped)


# --------------------------------------------------------------------------- location


@dataclass(frozen=True, slots=True)
class Coordinates:
    """A workplace's position in WGS 84 decimal degrees."""

    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        lat, lon = self.latitude, self.longitude
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise WorkplaceError(f"coordinates {lat}, {lon} are out of range")
        in_belgium = (
            BELGIUM_LAT[0] <= lat <= BELGIUM_LAT[1] and BELGIUM_LON[0] <= lon <= BELGIUM_LON[1]
        )
        if not in_belgium:
            swapped = (
                BELGIUM_LAT[0] <= lon <= BELGIUM_LAT[1] and BELGIUM_LON[0] <= lat <= BELGIUM_LON[1]
            )
            hint = " (latitude and longitude look swapped)" if swapped else ""
            raise WorkplaceError(
                f"coordinates {lat}, {lon} are not in Belgium{hint}; give latitude first, "
                "e.g. 50.8503, 4.3517"
            )

    @classmethod
    def parse(cls, text: str) -> Coordinates:
        """``"50.8503, 4.3517"``, ``"50.8503 4.3517"`` (latitude first), or with Belgian
        decimal commas: ``"50,8503; 4,3517"``, ``"50,8503 4,3517"``, ``"50,8503, 4,3517"``.

        A comma is a decimal comma only where it cannot be the separator: with a ``;`` between
        the numbers, or when there are no dots and more than one comma. ``"50,8503,4,3517"``
        could be read two ways and is refused, saying how to write it.
        """
        raw = (text or "").strip()
        advice = "give 'latitude, longitude', e.g. 50.8503, 4.3517 (or 50,8503; 4,3517)"
        if ";" in raw:
            parts = raw.split(";")
        elif "." in raw or raw.count(",") <= 1:
            parts = re.split(r"[,\s]+", raw)
        else:  # decimal commas: the numbers are apart by a space (after a comma or not)
            parts = re.split(r",?\s+", raw)
            if len(parts) != 2:
                raise WorkplaceError(
                    f"{text!r}: with decimal commas, put '; ' or a space between latitude and "
                    "longitude, e.g. 50,8503; 4,3517"
                )
        parts = [p.strip().replace(",", ".") for p in parts if p.strip()]
        if len(parts) != 2:
            raise WorkplaceError(f"{text!r}: {advice}")
        try:
            lat, lon = (float(p) for p in parts)
        except ValueError:
            raise WorkplaceError(
                f"{text!r}: coordinates must be decimal numbers; {advice}"
            ) from None
        return cls(lat, lon)


@dataclass(frozen=True, slots=True)
class Address:
    """A Belgian workplace address, in the field names of CIaO's ``placeOfWork.address``."""

    street: str
    house_number: str
    post_code: str
    municipality: str
    box: str = ""

    def __post_init__(self) -> None:
        missing = [
            name
            for name in ("street", "house_number", "post_code", "municipality")
            if not getattr(self, name).strip()
        ]
        if missing:
            raise WorkplaceError(f"address lacks {', '.join(missing)}")
        if not re.fullmatch(r"[1-9]\d{3}", self.post_code.strip()):
            raise WorkplaceError(f"post code {self.post_code!r} is not a Belgian post code")

    def to_ciao(self) -> dict[str, str]:
        out = {
            "streetName": self.street.strip(),
            "houseNumber": self.house_number.strip(),
            "postCode": self.post_code.strip(),
            "municipalityName": self.municipality.strip(),
        }
        if self.box.strip():
            out["boxNumber"] = self.box.strip()
        return out


@dataclass(frozen=True, slots=True)
class WorkplaceBinding:
    """A DoW reference with where it is: what a terminal is bound to."""

    reference: str
    coordinates: Coordinates | None = None
    address: Address | None = None

    def __post_init__(self) -> None:
        if not WORKPLACE_RE.match(self.reference):
            raise WorkplaceError(f"{self.reference!r} is not a Declaration of Works reference")
        if self.coordinates is None and self.address is None:
            raise WorkplaceError(
                "CIaO needs the workplace's coordinates or its address: give one of them"
            )

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.reference}
        if self.coordinates is not None:
            out["latitude"] = self.coordinates.latitude
            out["longitude"] = self.coordinates.longitude
        if self.address is not None:
            out["address"] = self.address.to_ciao()
        return out

    @classmethod
    def from_map(cls, raw: dict[str, Any]) -> WorkplaceBinding:
        """Inverse of :meth:`to_map` (used on the gateway side of enrolment)."""
        if not isinstance(raw, dict):
            raise WorkplaceError("workplace must be an object")
        coords = None
        if raw.get("latitude") is not None or raw.get("longitude") is not None:
            try:
                coords = Coordinates(float(raw["latitude"]), float(raw["longitude"]))
            except (KeyError, TypeError, ValueError):
                raise WorkplaceError("workplace latitude/longitude are not numbers") from None
        address = None
        if raw.get("address") is not None:
            a = raw["address"]
            if not isinstance(a, dict):
                raise WorkplaceError("workplace address must be an object")
            address = Address(
                street=str(a.get("streetName", "")),
                house_number=str(a.get("houseNumber", "")),
                post_code=str(a.get("postCode", "")),
                municipality=str(a.get("municipalityName", "")),
                box=str(a.get("boxNumber", "")),
            )
        return cls(parse_reference(str(raw.get("reference", ""))), coords, address)
