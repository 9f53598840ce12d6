"""The console's terminal actions on a real gateway database and a real broker password file:
each audited with the person's name; rebind as a token for the new workplace; decommission
disables and removes the broker login; the last key is never revoked; tokens listed by scope
and revoked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siteclock.gateway.broker_passwords import read_password_file
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.provisioning.gateway.broker_accounts import BrokerAccounts
from siteclock.provisioning.gateway.terminal_actions import ActionRefused, TerminalActions
from tests.contract.test_gateway_db import SITE, T

OTHER = "ABCDEFGH12345"


@pytest.fixture
def world(tmp_path: Path):
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    reloads: list[int] = []
    broker = BrokerAccounts(tmp_path / "passwd", lambda: reloads.append(1))
    broker.set_password(T)
    actions = TerminalActions(db, broker=broker, gateway_url="https://gw.test:8443")
    actions.registry.register(T, SITE, public_key=b"\x01" * 32)
    yield db, actions, tmp_path / "passwd"
    db.close()


def audit(db, terminal: str = T) -> list[tuple[str, dict]]:
    return [(r["action"], json.loads(r["detail"])) for r in db.terminal_audit_rows(terminal)]


def test_rebind_issues_a_token_for_the_new_workplace_and_says_what_to_run(world) -> None:
    db, actions, _ = world
    plan = actions.prepare_rebind(T, OTHER, reason="site moved", by="admin@x")
    assert plan.token.workplace == OTHER
    assert f"--workplace {OTHER}" in plan.command
    assert "https://gw.test:8443" in plan.command
    assert actions.registry.get(T).workplace == SITE  # the terminal completes the move
    assert audit(db)[0] == ("rebind_prepared", {"by": "admin@x", "new": OTHER, "old": SITE,
                                                "reason": "site moved"})  # fmt: skip
    with pytest.raises(ActionRefused, match="already bound"):
        actions.prepare_rebind(T, SITE, reason="x", by="admin@x")
    with pytest.raises(ActionRefused, match="say why"):
        actions.prepare_rebind(T, OTHER, reason=" ", by="admin@x")


def test_decommission_disables_and_removes_the_broker_login(world) -> None:
    db, actions, passwd = world
    assert T in read_password_file(passwd)
    assert actions.decommission(T, by="admin@x") is True
    assert actions.registry.get(T).status == "disabled"
    assert T not in read_password_file(passwd)
    assert audit(db)[0] == ("decommission", {"by": "admin@x"})
    assert db.terminals_page() == []
    with pytest.raises(ActionRefused, match="disabled, not active"):
        actions.decommission(T, by="admin@x")


def test_a_compromised_key_is_revoked_but_never_the_last_one(world) -> None:
    db, actions, _ = world
    (first,) = [k["kid"] for k in actions.keys(T)]
    with pytest.raises(ActionRefused, match="only key"):
        actions.revoke_key(T, first, by="admin@x")
    second = actions.registry.add_key(T, b"\x02" * 32)
    actions.revoke_key(T, first, by="admin@x")
    keys = {k["kid"]: k["revoked_at_ns"] for k in actions.keys(T)}
    assert keys[first] is not None
    assert keys[second] is None
    assert audit(db)[0] == ("revoke_key", {"by": "admin@x", "kid": first})


def test_tokens_are_created_listed_by_scope_and_revoked(world) -> None:
    _, actions, _ = world
    mine = actions.create_token(SITE, by="manager@x", note="second terminal")
    other = actions.create_token(OTHER, by="admin@x")
    assert [t.workplace for t in actions.list_tokens([SITE])] == [SITE]
    assert {t.workplace for t in actions.list_tokens()} == {SITE, OTHER}
    other_id = other.token_hash[:10]
    with pytest.raises(ActionRefused, match="on your worksites"):
        actions.revoke_token(other_id, by="manager@x", workplaces=[SITE])
    revoked = actions.revoke_token(mine.token_hash[:10], by="manager@x", workplaces=[SITE])
    assert revoked.workplace == SITE
    assert actions.list_tokens([SITE])[0].revoked_ns is not None
    with pytest.raises(ActionRefused, match="only an unused one"):
        actions.revoke_token(mine.token_hash[:10], by="manager@x")
