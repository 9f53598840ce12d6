"""The employer's and installer's daily operations on every backend: token revocation, badge
unblocking, workers listed, moved and removed, a terminal's last heartbeat."""

from __future__ import annotations

from siteclock.gateway.db import GatewayDB
from tests.contract.test_gateway_db import SITE, T, event

OTHER = "1Y1003SQ5VSSX"


def test_an_unused_token_is_revoked_once_and_expires_then(db: GatewayDB) -> None:
    db.add_token("h1", SITE, 1, 100, "employer", "")
    db.add_token("h2", SITE, 1, 100, "employer", "")
    assert db.claim_token("h2", "t-a", "kid-a", 5)
    assert db.revoke_token("h1", 40, "boss") is True
    assert db.revoke_token("h1", 50, "boss") is False  # revoked already
    assert db.revoke_token("h2", 50, "boss") is False  # used: stays for the audit trail
    assert db.token("h1")[3] == 40  # expires when revoked (the smaller of the two)
    assert db.token_revocations() == {"h1": 40}


def test_workers_are_listed_moved_unblocked_and_removed(db: GatewayDB) -> None:
    for ref, name in (("w-2", "Bob"), ("w-1", "Ana")):
        db.save_worker(ref, name, b"sealed", "0123456789", "enterprise", "employee")
        db.assign_worker(ref, SITE)
    db.link_badge("nfc-a:0A", "w-1")
    db.link_badge("nfc-a:0B", "w-1")
    db.assign_worker("w-1", OTHER)
    db.block_badge("nfc-a:0B")
    assert db.unblock_badge("nfc-a:0B") is True
    assert db.unblock_badge("nfc-a:FF") is False
    assert db.badge_active("nfc-a:0B") is True
    listing = [tuple(row) for row in db.worker_listing(SITE)]
    assert listing == [
        ("w-1", "Ana", "0123456789", "employee", "nfc-a:0A", 1),
        ("w-1", "Ana", "0123456789", "employee", "nfc-a:0B", 1),
        ("w-2", "Bob", "0123456789", "employee", None, None),
    ]
    assert db.workplaces_of("w-1") == sorted([SITE, OTHER])
    db.unassign_worker("w-1", OTHER)
    assert db.workplaces_of("w-1") == [SITE]
    assert db.assigned_workers(SITE) == ["w-1", "w-2"]

    db.store_events([event(1, badge="nfc-a:0A"), event(2, badge="nfc-a:0B")])
    db.take_new_events(1, full=True)
    db.set_registrations([((T, 1), {"state": "registered"})])
    assert db.unfinished_taps_of_worker("w-1", ("registered", "rejected")) == 1
    version = db.registry_version()
    assert db.delete_worker("w-2") is True
    assert db.delete_worker("w-2") is False
    assert db.registry_version() > version
    assert db.assigned_workers(SITE) == ["w-1"]


def test_a_terminals_last_heartbeat_time(db: GatewayDB) -> None:
    db.add_terminal(T, SITE, "active", 1)
    assert db.last_heard_ns(T) is None
    db.record_heartbeat(T, "{}", 77)
    assert db.last_heard_ns(T) == 77
    assert db.last_heard_ns("t-unknown") is None
