"""Gateway side of enrolment: one-time tokens, and turning a terminal's public key into a member.

An employer creates an **enrolment token** for one workplace (``siteclock provision token
create``) and hands it to the installer. The token is the only secret the installer carries:

* it is random (120 bits), shown once, and stored **hashed** (SHA-256): a stolen database gives
  no usable token;
* it expires (default 24 h), is **single use**, and is **scoped** to one Declaration of Works:
  a terminal enrolled with it can only be bound to that workplace.

A terminal enrols by sending its id, workplace, public key and a signature with the matching
private key over the request (proof that it holds the key; the private key never leaves the
terminal). :meth:`EnrolmentService.enrol` then, in this order:

1. claims the token for this (terminal, key) in one SQLite transaction;
2. registers the terminal's key and binding in :class:`gateway.terminals.TerminalRegistry`
   (and the workplace's location in :class:`gateway.registry.Registry` when the site has none
   yet: the first location wins, a different one from a later terminal is kept aside as a
   conflict for the employer, never written over the site's, see :func:`record_location`);
3. gives the terminal a fresh broker password (Mosquitto ``$7$`` line in the password file) and
   makes the running broker reread it (SIGHUP, no restart).

If the answer is lost (a crash, a cut cable), the terminal asks again with the same token and
key: the same claimant is recognised, steps 2-3 are completed or repeated, and a new password
replaces the one that never arrived. Any other reuse of the token is refused. Every refusal has a
short reason (``expired``, ``used``, ``wrong_workplace``...) that is counted and logged; a
caller without a valid token (or key) is told only ``401 unauthorized``: nothing about whether
a token or a terminal exists, where it is bound or in which state.

Public keys are checked before anything is stored (:func:`check_public_key`): an Ed25519 key
of small or mixed order, or an ES256 point off the curve, is refused.

Example::

    tokens = TokenStore(db)
    issued = tokens.create("1Y1003SQ5VSSZ", ttl_s=86400, created_by="employer")
    service = EnrolmentService(tokens, TerminalRegistry(db), BrokerAccounts(passwd, reload),
                               endpoint=BrokerEndpoint("gw.site.local", 8883, ca_pem))
    result = service.enrol(request)   # EnrolmentResult with the broker password
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from siteclock.gateway.terminals import ACTIVE, TerminalRegistry
from siteclock.log import fields
from siteclock.protocol import (
    key_id,
)
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.key_checks import check_public_key, verify_proof
from siteclock.provisioning.gateway.tokens import TokenStore
from siteclock.provisioning.shared.requests import (
    BrokerEndpoint,
    EnrolmentRefused,
    EnrolmentRequest,
    EnrolmentResult,
)
from siteclock.provisioning.shared.workplace import WorkplaceBinding

log = logging.getLogger(__name__)


class EnrolmentService:
    """The enrolment endpoint's logic, independent of HTTP (so it is testable without it)."""

    def __init__(
        self,
        tokens: TokenStore,
        terminals: TerminalRegistry,
        broker: BrokerAccounts,
        *,
        endpoint: BrokerEndpoint,
        gateway_keys: Mapping[str, str] | None = None,
        workplaces: Any = None,
    ) -> None:
        """``workplaces``: a :class:`gateway.registry.Registry` to record the workplace's
        location in (CIaO needs it with every registration); optional."""
        self.tokens = tokens
        self.terminals = terminals
        self.broker = broker
        self.endpoint = endpoint
        self.gateway_keys = dict(gateway_keys or {})
        self.workplaces = workplaces
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record_location(self, binding: WorkplaceBinding, terminal_id: str) -> None:
        """Give the workplace the location a terminal's installer typed, if it has none yet.

        The location is the site's, shared by all its terminals and sent to the NSSO with every
        registration: one terminal's installer (or a stolen token) must not move it for all.
        The first location wins; a different one is kept in ``enrol_location_conflicts``, logged
        and left for the employer (:meth:`TokenStore.location_conflicts`)."""
        if self.workplaces is None or (binding.coordinates is None and binding.address is None):
            return
        coords, address = binding.coordinates, binding.address
        given = {
            "latitude": round(coords.latitude, 6) if coords else None,
            "longitude": round(coords.longitude, 6) if coords else None,
            "address": address.to_ciao() if address else None,
        }
        current = self.workplaces.workplace(binding.reference)
        if current is None:
            self.workplaces.add_workplace(binding.reference, **given)
            return
        kept = {
            "latitude": round(current.latitude, 6) if current.latitude is not None else None,
            "longitude": round(current.longitude, 6) if current.longitude is not None else None,
            "address": current.address,
        }
        differs = any(given[k] is not None and given[k] != kept[k] for k in given)
        if differs:
            self.tokens.record_location_conflict(binding.reference, terminal_id, binding)
            self.counters["location_conflict"] += 1
            log.warning(
                "terminal gave a different workplace location; the site's is kept",
                extra=fields(terminal=terminal_id, workplace=binding.reference),
            )

    def refuse(self, exc: EnrolmentRefused, terminal: str | None) -> None:
        self.counters[exc.reason] += 1
        log.warning("enrolment refused", extra=fields(terminal=terminal, reason=exc.reason))

    def enrol(self, request: EnrolmentRequest) -> EnrolmentResult:
        try:
            with self._lock:
                result = self._enrol(request)
        except EnrolmentRefused as exc:
            self.refuse(exc, request.terminal_id)
            raise
        self.counters["enrolled"] += 1
        log.info(
            "terminal enrolled",
            extra=fields(terminal=result.terminal_id, workplace=result.workplace, kid=result.kid),
        )
        return result

    def _may_re_enrol(self, existing: Any, workplace: str, kid: str) -> bool:
        """For a terminal id already known: False for the same key (a retry after a lost
        answer), True when a new key may take the id over, else a refusal.

        An enrolment that failed on the terminal (a wrong reader, a wiped data directory...)
        must not burn its id: whoever holds a new valid token for the same workplace may enrol
        the id again with a new key, as long as no event was ever recorded under it (its old
        keys are revoked, kept for the record). An id with a history is kept by its terminal.
        """
        terminal_id = existing.terminal_id
        if existing.status != ACTIVE:
            raise EnrolmentRefused(
                "terminal_exists",
                f"terminal id {terminal_id!r} was decommissioned; choose another id",
                status=409,
            )
        if existing.workplace != workplace:
            raise EnrolmentRefused(
                "terminal_exists",
                f"terminal id {terminal_id!r} is enrolled at another workplace; choose another "
                "id, or use 'provision rebind' on that terminal",
                status=409,
            )
        if kid in existing.keys:
            return False
        if self.terminals.has_events(terminal_id):
            raise EnrolmentRefused(
                "terminal_exists",
                f"terminal id {terminal_id!r} is already enrolled and has recorded taps; choose "
                "another id, or use rebind / rotate-key on that terminal",
                status=409,
            )
        return True

    def _enrol(self, req: EnrolmentRequest) -> EnrolmentResult:
        kid = key_id(req.public_key)
        workplace = req.workplace.reference
        # The token first: without a valid one the caller learns nothing about any terminal.
        self.tokens.check(req.token, terminal_id=req.terminal_id, kid=kid, workplace=workplace)
        check_public_key(req.alg, req.public_key)
        verify_proof(req.alg, req.public_key, req.signature, req.signed_body())
        existing = self.terminals.get(req.terminal_id)
        # Checked before the token is claimed: a clash must not burn the installer's token.
        re_enrol = existing is not None and self._may_re_enrol(existing, workplace, kid)
        self.tokens.claim(req.token, terminal_id=req.terminal_id, kid=kid, workplace=workplace)
        if existing is None:
            self.terminals.register(
                req.terminal_id, workplace, public_key=req.public_key, alg=req.alg
            )
        elif re_enrol:
            self.terminals.replace_keys(
                req.terminal_id, req.public_key, alg=req.alg,
                reason="enrolled again with a new token before recording any event",
            )  # fmt: skip
            self.counters["re_enrolled"] += 1
        self.record_location(req.workplace, req.terminal_id)
        password = self.broker.set_password(req.terminal_id)
        return EnrolmentResult(
            terminal_id=req.terminal_id,
            workplace=workplace,
            kid=kid,
            mqtt_username=req.terminal_id,
            mqtt_password=password,
            endpoint=self.endpoint,
            gateway_keys=self.gateway_keys,
        )
