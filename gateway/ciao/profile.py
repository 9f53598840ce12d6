"""The CIaO contract profile: every unconfirmed detail of the NSSO REST contract, in one file.

The official OpenAPI description of CIaO is not public (see ``docs/ciao.md``), so paths, the
casing of ``type``, the ``validity`` values, the batch limit, the token lifetime and the search
parameters are guesses from third-party code. They live in ``profile.toml`` next to this module
and nowhere else: the simulator and the client both read :func:`load`, so when the real contract
is known, one file changes and both follow.

Example::

    profile = load()                  # the packaged profile.toml
    profile.api_path("lookup", id=17611)
    # -> '/REST/presenceRegistration/v1/presenceRegistrations/17611'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from siteclock.config import load as load_config
from siteclock.protocol import Kind

DEFAULT_PATH = Path(__file__).with_name("profile.toml")


@dataclass(frozen=True)
class Paths:
    token: str
    api_base: str
    register: str
    lookup: str
    search: str


@dataclass(frozen=True)
class Contract:
    type_in: str
    type_out: str
    accept_any_type_casing: bool
    timestamp_precision: str
    batch_limit: int
    token_ttl_s: int
    assertion_ttl_s: int
    assertion_max_ttl_s: int
    address_fields: tuple[str, ...] = ("postCode", "municipalityName")

    def __post_init__(self) -> None:
        if self.timestamp_precision not in ("seconds", "milliseconds"):
            raise ValueError("timestamp_precision must be 'seconds' or 'milliseconds'")
        if not 1 <= self.batch_limit <= 10_000:
            raise ValueError("batch_limit must be 1..10000")


@dataclass(frozen=True)
class Validity:
    pending: str
    valid: str
    invalid: str


@dataclass(frozen=True)
class SearchParams:
    ssin: str
    enterprise_number: str
    foreign_vat_number: str
    workplace: str
    date_from: str
    date_to: str
    page: str
    page_size: str
    max_page_size: int


@dataclass(frozen=True)
class Profile:
    """The parsed ``profile.toml``."""

    paths: Paths
    contract: Contract
    validity: Validity
    search: SearchParams

    def api_path(self, name: str, **params: object) -> str:
        """The absolute path of API operation ``name`` (register, lookup, search)."""
        relative: str = getattr(self.paths, name)
        return self.paths.api_base + relative.format(**params)

    def ciao_type(self, kind: Kind | str) -> str:
        """Map a terminal's kind to CIaO's two types: a break starts with out, ends with in."""
        if Kind(kind).at_work_after:
            return self.contract.type_in
        return self.contract.type_out

    def accepted_types(self) -> frozenset[str]:
        """The ``type`` values a server following this profile accepts."""
        values = {self.contract.type_in, self.contract.type_out}
        if self.contract.accept_any_type_casing:
            values |= {v.upper() for v in values} | {v.lower() for v in values}
        return frozenset(values)

    @property
    def address_fields(self) -> tuple[str, ...]:
        """The fields a ``placeOfWork.address`` must hold (coordinates need none)."""
        return self.contract.address_fields

    @property
    def final_validities(self) -> frozenset[str]:
        return frozenset({self.validity.valid, self.validity.invalid})


def load(path: Path | str | None = None) -> Profile:
    """Read a profile file (the packaged one by default); errors name the file and key."""
    if path is None:
        return _default()
    return load_config(path, Profile)


@cache
def _default() -> Profile:
    return load_config(DEFAULT_PATH, Profile)
