"""What an employer does to a terminal from the console: rebind, decommission, its keys, and
the enrolment tokens. Each action is audited with the person's name (``terminal_audit``).

The terminal owns its key and its binding (DESIGN decision 6), so two of these actions are the
employer's half of a move the terminal completes:

* **Rebind** issues a token for the *new* workplace (the employer's consent, single use) and
  says what the installer runs on the terminal (``siteclock provision rebind``): the terminal
  first delivers every event queued under the old binding, then asks the gateway, signing with
  its key (:mod:`provisioning.gateway.lifecycle`). Rebinding the registry alone would make the
  terminal's queued events unacceptable.
* **Key rotation** happens on the terminal (``siteclock provision rotate-key``: new key, an
  overlap, the old one revoked once nothing signed with it is unsent). From the console the
  employer sees the keys and revokes one that is compromised (a lost or stolen terminal),
  never the last one of an active terminal: decommission it instead.

**Decommission** disables the terminal (its events are refused, it leaves the terminals page
and its alerts resolve) and removes its broker account when the broker's password file is known.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from siteclock.gateway.db import GatewayDB
from siteclock.gateway.terminals import ACTIVE, DISABLED, TerminalRegistry
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.tokens import DEFAULT_TTL_S, IssuedToken, TokenInfo, TokenStore
from siteclock.provisioning.shared.workplace import parse_reference


class ActionRefused(ValueError):
    """An action that cannot be done, with the reason a person can act on."""


@dataclass(frozen=True)
class RebindPlan:
    token: IssuedToken
    command: str
    """What the installer runs on the terminal."""


class TerminalActions:
    """The console's terminal actions on the gateway database (and the broker's accounts)."""

    def __init__(
        self,
        db: GatewayDB,
        *,
        broker: BrokerAccounts | None = None,
        gateway_url: str = "https://<gateway>:8443",
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.db = db
        self.registry = TerminalRegistry(db)
        self.tokens = TokenStore(db, clock=clock_ns)
        self.broker = broker
        self.gateway_url = gateway_url
        self.clock_ns = clock_ns

    def _audit(self, terminal: str, action: str, by: str, **detail: Any) -> None:
        detail["by"] = by
        text = json.dumps(detail, sort_keys=True)
        self.db.audit_terminal(terminal, action, text, self.clock_ns())

    def _active(self, terminal: str) -> Any:
        record = self.registry.get(terminal)
        if record is None:
            raise ActionRefused(f"terminal {terminal!r} is not enrolled")
        if record.status != ACTIVE:
            raise ActionRefused(f"terminal {terminal} is {record.status}, not active")
        return record

    # ------------------------------------------------------------------ rebind

    def prepare_rebind(self, terminal: str, workplace: str, *, reason: str, by: str) -> RebindPlan:
        """A single-use token for the new workplace and the installer's command."""
        record = self._active(terminal)
        new = parse_reference(workplace)
        if new == record.workplace:
            raise ActionRefused(f"terminal {terminal} is already bound to {new}")
        if not reason.strip():
            raise ActionRefused("say why the terminal moves (kept in the audit trail)")
        issued = self.tokens.create(new, created_by=by, note=f"rebind {terminal}: {reason}"[:200])
        self._audit(terminal, "rebind_prepared", by, old=record.workplace, new=new, reason=reason)
        command = (
            f"siteclock provision rebind --workplace {new} --gateway {self.gateway_url} "
            f"--reason '{reason}'   (then type the token)"
        )
        return RebindPlan(issued, command)

    # ------------------------------------------------------------------ decommission

    def decommission(self, terminal: str, *, by: str) -> bool:
        """Disable the terminal and remove its broker login. Returns whether a broker account
        was removed (False when the broker's password file is not known here)."""
        self._active(terminal)
        with self.db.atomic():
            self.db.set_terminal_status(terminal, DISABLED)
            self._audit(terminal, "decommission", by)
        return self.broker.remove(terminal) if self.broker is not None else False

    # ------------------------------------------------------------------ keys

    def keys(self, terminal: str) -> list[dict[str, Any]]:
        record = self.registry.get(terminal)
        if record is None:
            raise ActionRefused(f"terminal {terminal!r} is not enrolled")
        return [
            {"kid": k.kid, "alg": k.alg, "valid_from_ns": k.valid_from_ns,
             "revoked_at_ns": k.revoked_at_ns}
            for k in record.all_keys
        ]  # fmt: skip

    def revoke_key(self, terminal: str, kid: str, *, by: str) -> None:
        """Revoke one key (compromised): events signed with it from now on are refused, old
        evidence still verifies. The last active key of an active terminal is kept."""
        record = self._active(terminal)
        if kid not in record.keys:
            raise ActionRefused(f"{kid!r} is not an active key of terminal {terminal}")
        if len(record.keys) == 1:
            raise ActionRefused(
                f"{kid} is terminal {terminal}'s only key: rotate it on the terminal "
                "(siteclock provision rotate-key) or decommission the terminal"
            )
        with self.db.atomic():
            self.registry.revoke_key(terminal, kid)
            self._audit(terminal, "revoke_key", by, kid=kid)

    # ------------------------------------------------------------------ enrolment tokens

    def create_token(
        self, workplace: str, *, by: str, note: str = "", ttl_s: float = DEFAULT_TTL_S
    ) -> IssuedToken:
        return self.tokens.create(workplace, ttl_s=ttl_s, created_by=by, note=note)

    def list_tokens(self, workplaces: list[str] | None = None) -> list[TokenInfo]:
        """Tokens, newest first; only those of ``workplaces`` when given (a site manager)."""
        found = [t for t in self.tokens.list() if workplaces is None or t.workplace in workplaces]
        return sorted(found, key=lambda t: t.created_ns, reverse=True)

    def revoke_token(
        self, token_id: str, *, by: str, workplaces: list[str] | None = None
    ) -> TokenInfo:
        """Revoke an unused token; with ``workplaces``, only one of those (a site manager)."""
        try:
            if workplaces is not None and self.tokens.find(token_id).workplace not in workplaces:
                raise ActionRefused(f"no token with id {token_id!r} on your worksites")
            return self.tokens.revoke(token_id, by=by)
        except ValueError as exc:
            raise ActionRefused(str(exc)) from None
