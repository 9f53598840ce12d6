"""Signed rosters for terminals: badge -> pseudonymous worker reference and display name.

A terminal greets a worker by name and flags unknown badges, but it must never hold an INSS
(DESIGN decision 5): a roster carries only the pseudonymous ``worker`` reference and a display
name, and :func:`check_entries` leaves out any entry shaped like an INSS before it is signed. The
roster is signed with the gateway's key and published *retained* on the terminal's ``config``
topic, so a terminal that connects later (or restarts) gets the newest one at once; the broker
ACL lets only the gateway write there and only that terminal read it.

Terminals learn the gateway's public key(s) from a JSON file written by
:func:`write_gateway_keys` (``{"<kid>": "<hex public key>"}``), copied at provisioning.

Example::

    publisher = RosterPublisher(link, signer)   # the gateway's MqttLink (gateway.link)
    publisher.publish_roster("t-hall-01", [RosterEntry("nfc-a:04A1B2C3", "w-17", "An P.")])
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from siteclock.gateway.link import Publisher
from siteclock.gateway.pki import write_public
from siteclock.log import INSS_PATTERN, fields
from siteclock.protocol import (
    Channel,
    DayEntry,
    ProtocolError,
    Roster,
    RosterEntry,
    Signer,
    check_badge,
    encode_roster,
    topic,
)

log = logging.getLogger(__name__)


def check_entries(entries: Iterable[RosterEntry]) -> tuple[RosterEntry, ...]:
    """The entries fit to sign: a malformed badge, or a worker reference or name shaped like an
    INSS, leaves that entry out (logged by badge, never by value) and the rest goes out, so one
    bad registry row never holds back a whole site's roster."""
    checked = []
    for entry in entries:
        try:
            check_badge(entry.badge)
        except ProtocolError as exc:
            log.error("roster entry left out: %s", exc, extra=fields(
                next_step="fix the badge in the worker registry"))  # fmt: skip
            continue
        values = (("worker reference", entry.worker), ("name", entry.name))
        shaped = [label for label, value in values if INSS_PATTERN.search(value)]
        if shaped:
            log.error(
                "roster entry left out: its %s looks like an INSS", " and ".join(shaped),
                extra=fields(badge=entry.badge, next_step="give the worker another reference "
                             "or name (siteclock workers)"),
            )  # fmt: skip
            continue
        checked.append(entry)
    return tuple(checked)


def write_gateway_keys(path: Path, signers: Sequence[Signer]) -> None:
    """The public keys terminals accept rosters from: ``{kid: hex}`` (public, 0644)."""
    keys = {s.kid: s.public_key_bytes().hex() for s in signers}
    write_public(path, (json.dumps(keys, indent=2, sort_keys=True) + "\n").encode())


class RosterPublisher:
    """Signs and publishes rosters on the gateway's MQTT link (or any :class:`Publisher`).

    Versions are nanosecond timestamps, strictly increasing within this process, so a terminal
    can ignore an older roster that a broker replays.
    """

    def __init__(self, link: Publisher, signer: Signer) -> None:
        self._link = link
        self._signer = signer
        self._lock = threading.Lock()
        self._last_version = 0

    def _next_version(self) -> int:
        with self._lock:
            self._last_version = max(time.time_ns(), self._last_version + 1)
            return self._last_version

    def publish_site(
        self,
        terminal_ids: Iterable[str],
        entries: Iterable[RosterEntry],
        day: Iterable[DayEntry] = (),
    ) -> int:
        """Publish one workplace's roster to each of its terminals: the entries checked once
        for the site (not once per terminal), then each terminal's copy signed (a roster names
        its terminal, so a copy cannot be replayed to another). Returns how many."""
        checked, site_day = check_entries(entries), tuple(day)
        sent = 0
        for terminal_id in terminal_ids:
            roster = Roster(terminal_id, self._next_version(), checked, site_day)
            payload = encode_roster(roster, self._signer)
            self._link.publish(topic(terminal_id, Channel.CONFIG), payload, qos=1, retain=True)
            sent += 1
        return sent

    def build(
        self,
        terminal_id: str,
        entries: Iterable[RosterEntry],
        day: Iterable[DayEntry] = (),
    ) -> tuple[Roster, bytes]:
        roster = Roster(terminal_id, self._next_version(), check_entries(entries), tuple(day))
        return roster, encode_roster(roster, self._signer)

    def publish_roster(
        self, terminal_id: str, entries: Iterable[RosterEntry], day: Iterable[DayEntry] = ()
    ) -> Roster:
        """Publish (retained, QoS 1) the full roster for one terminal; returns what was sent.

        ``day`` is the site view (each worker's last stored tap on the workplace) from
        :class:`gateway.sequence.SiteDay`: how a terminal learns the site's other taps."""
        roster, payload = self.build(terminal_id, entries, day)
        self._link.publish(topic(terminal_id, Channel.CONFIG), payload, qos=1, retain=True)
        return roster
