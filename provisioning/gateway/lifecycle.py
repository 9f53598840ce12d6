"""A terminal's life after enrolment, gateway side: rebind, key rotation, decommission.

* **Rebind** (the terminal moves to another worksite) is explicit: the request must say
  ``confirm: true`` (the CLI asks the installer to retype the new reference first), it needs a
  fresh enrolment token scoped to the *new* workplace (the employer agreed to the move), it is
  signed by the terminal's current key, and the registry records it in its audit trail with the
  reason. The old binding is revoked: the registry now names the new workplace (events naming
  the old one are refused from now on) and the terminal gets a new broker password, so the old
  credentials stop working. The terminal side (:mod:`provisioning.terminal.rebind`) first lets every
  event queued under the old binding be delivered under it, then switches.
* **Key rotation** overlaps old and new key: the new key is added (signed by the old key, and by
  the new key to prove possession) while the old stays valid, so events already signed with it
  and still queued are accepted. Only when nothing signed by the old key is left unsent does the
  terminal ask to revoke it (signed by the new key). Revoked keys are kept: old evidence still
  verifies offline.
* **Decommission** disables the terminal in the registry (its events are refused) and removes its
  broker account (next login refused). It is an employer's act on the gateway host.

Every request a terminal makes here is signed with one of its registered, unrevoked keys over
:func:`provisioning.shared.requests.signed_bytes` of the request's fields.
"""

from __future__ import annotations

import logging
from typing import Any

from siteclock.gateway.terminals import ACTIVE, DISABLED, TerminalRegistry
from siteclock.log import fields
from siteclock.protocol import key_id
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.key_checks import check_public_key, verify_proof
from siteclock.provisioning.gateway.service import EnrolmentService
from siteclock.provisioning.shared.requests import (
    EnrolmentRefused,
    EnrolmentResult,
    KeyRequest,
    RebindRequest,
    unauthorized,
)

log = logging.getLogger(__name__)

class Lifecycle:
    """Rebind, rotate and decommission, on the gateway's registry, tokens and broker."""

    def __init__(self, service: EnrolmentService) -> None:
        self.service = service
        self.terminals: TerminalRegistry = service.terminals
        self.broker: BrokerAccounts = service.broker

    def _authenticate(self, terminal_id: str, kid: str, signature: bytes, body: bytes) -> None:
        """The request is signed by a current key of an active terminal, or a uniform 401:
        the caller learns neither whether the terminal exists nor its state."""
        record = self.terminals.get(terminal_id)
        if record is None:
            raise unauthorized("unknown_terminal")
        if record.status != ACTIVE:
            raise unauthorized("terminal_disabled")
        key = next((k for k in record.all_keys if k.kid == kid), None)
        if key is None or key.revoked_at_ns is not None:
            raise unauthorized("unknown_key")
        try:
            verify_proof(key.alg, key.public_key, signature, body)
        except EnrolmentRefused:
            raise unauthorized("bad_proof") from None

    def _guard(self, terminal: str, action: Any) -> Any:
        try:
            return action()
        except EnrolmentRefused as exc:
            self.service.refuse(exc, terminal)
            raise

    # ------------------------------------------------------------------ rebind

    def rebind(self, req: RebindRequest) -> EnrolmentResult:
        return self._guard(req.terminal_id, lambda: self._rebind(req))  # type: ignore[no-any-return]

    def _rebind(self, req: RebindRequest) -> EnrolmentResult:
        self._authenticate(req.terminal_id, req.kid, req.signature, req.signed_body())
        if not req.confirm:
            raise EnrolmentRefused(
                "not_confirmed", "a rebind must be confirmed explicitly (confirm: true)", status=400
            )
        record = self.terminals.get(req.terminal_id)
        assert record is not None  # authenticated above
        new = req.workplace.reference
        if record.workplace == new:
            # Already moved: a repeat of our own request whose answer was lost gets fresh
            # credentials; anything else is a mistake.
            info = self.service.tokens.info(req.token)
            if info is None or info.used_by != req.terminal_id or info.workplace != new:
                raise EnrolmentRefused("same_workplace", f"terminal is already bound to {new}")
        self.service.tokens.claim(
            req.token, terminal_id=req.terminal_id, kid=req.kid, workplace=new
        )
        if record.workplace != new:
            self.terminals.rebind(req.terminal_id, new, reason=req.reason)
        self.service.record_location(req.workplace, req.terminal_id)
        password = self.broker.set_password(req.terminal_id)  # the old password stops working
        log.info(
            "terminal rebound",
            extra=fields(terminal=req.terminal_id, old=record.workplace, new=new),
        )
        return EnrolmentResult(
            req.terminal_id, new, req.kid, req.terminal_id, password,
            self.service.endpoint, self.service.gateway_keys,
        )  # fmt: skip

    # ------------------------------------------------------------------ keys

    def keys(self, req: KeyRequest) -> str:
        """Apply a key request; returns the kid added or revoked."""
        return self._guard(req.terminal_id, lambda: self._keys(req))  # type: ignore[no-any-return]

    def _keys(self, req: KeyRequest) -> str:
        body = req.signed_body()
        self._authenticate(req.terminal_id, req.kid, req.signature, body)
        if req.action == "add":
            check_public_key(req.alg, req.public_key)
            verify_proof(req.alg, req.public_key, req.new_signature, body)
            new_kid = key_id(req.public_key)
            record = self.terminals.get(req.terminal_id)
            if record is not None and new_kid in {k.kid for k in record.all_keys}:
                return new_kid  # a repeated request (lost answer): already there
            self.terminals.add_key(req.terminal_id, req.public_key, alg=req.alg)
            log.info("terminal key added", extra=fields(terminal=req.terminal_id, kid=new_kid))
            return new_kid
        if req.revoke_kid == req.kid:
            raise EnrolmentRefused(
                "revoke_self", "a key cannot revoke itself: sign with the new key", status=400
            )
        record = self.terminals.get(req.terminal_id)
        assert record is not None  # authenticated above
        target = next((k for k in record.all_keys if k.kid == req.revoke_kid), None)
        if target is None:
            raise EnrolmentRefused(
                "unknown_key", f"key {req.revoke_kid!r} is not a key of this terminal", status=400
            )
        if target.revoked_at_ns is not None:
            return req.revoke_kid  # a repeated request (lost answer): already revoked
        self.terminals.revoke_key(req.terminal_id, req.revoke_kid)
        log.info("terminal key revoked", extra=fields(terminal=req.terminal_id, kid=req.revoke_kid))
        return req.revoke_kid

    # ------------------------------------------------------------------ decommission

    def decommission(self, terminal_id: str, *, confirm: bool) -> None:
        """Disable the terminal and remove its broker account (next login refused)."""
        if not confirm:
            raise EnrolmentRefused("not_confirmed", "decommissioning must be confirmed", status=400)
        if self.terminals.get(terminal_id) is None:
            raise EnrolmentRefused("unknown_terminal", f"terminal {terminal_id!r} is not enrolled")
        self.terminals.set_status(terminal_id, DISABLED)
        self.broker.remove(terminal_id)
        log.info("terminal decommissioned", extra=fields(terminal=terminal_id))
