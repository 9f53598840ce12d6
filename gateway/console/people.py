"""How the console names a worker: display name, pseudonymous reference and a masked INSS.

The full INSS never reaches a page: :func:`mask_inss` keeps the two check digits only
(``••.••.••-•••.23``), enough to tell two namesakes apart on a list, and nothing a page, log or
screenshot could leak. Looked up once per worker per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, g

from siteclock.gateway.db import GatewayDB
from siteclock.gateway.registry import Registry, RegistryError
from siteclock.log import fields

log = logging.getLogger(__name__)

MASK = "••.••.••-•••."


def mask_inss(digits: str) -> str:
    return MASK + digits[-2:]


@dataclass(frozen=True, slots=True)
class WorkerLabel:
    ref: str
    name: str
    masked_inss: str
    employer: str


class People:
    """Worker labels read through the registry (which alone decrypts an INSS).

    Without an INSS key there is no registry (``registry`` is None: no names, and the workers
    page answers 503). A key file that is missing while the database already holds workers is
    a wrong path, not a fresh site: a new key would be made that opens none of their INSS, so
    none is made and the error says where the key was looked for."""

    def __init__(self, db: GatewayDB, inss_key_file: Path | None) -> None:
        self.registry: Registry | None = None
        if inss_key_file is None:
            return
        if not Path(inss_key_file).exists() and db.worker_listing(None):
            log.error(
                "console: INSS key missing while the database holds workers; names and the "
                "workers page are off until inss_key_file points at the gateway's key",
                extra=fields(inss_key_file=inss_key_file),
            )
            return
        self.registry = Registry(db, inss_key_file)

    def label(self, ref: str | None) -> WorkerLabel | None:
        if ref is None or self.registry is None:
            return None
        cache: dict[str, WorkerLabel | None] = g.setdefault("worker_labels", {})
        if ref not in cache:
            try:
                found = self.registry.worker(ref)
            except RegistryError:
                found = None
            cache[ref] = (
                None if found is None
                else WorkerLabel(ref, found.name, mask_inss(found.inss.reveal()), found.employer.id)
            )  # fmt: skip
        return cache[ref]


def people() -> People:
    """The app's :class:`People` (made on first use)."""
    extras = current_app.extensions["siteclock_console"].extras
    found = extras.get("people")
    if found is None:
        state = current_app.extensions["siteclock_console"]
        found = extras["people"] = People(state.db, state.inss_key_file)
    return found  # type: ignore[no-any-return]
