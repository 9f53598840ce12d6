"""The load generator's own parts: its MQTT framing, its terminals' signed chains, and
``siteclock loadgen prepare`` registering the identities it writes."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from siteclock.app.loadgen import LoadGen, cli, load_identities, make_identities, sim_terminals
from siteclock.app.loadgen_mqtt import PUBLISH, publish_packet, read_packet
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.protocol import Kind, verify_chain

WORKPLACE = "1Y1003SQ5VSSZ"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_000])
def test_a_publish_reads_back_whatever_its_length(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = publish_packet("siteclock/v1/t-a/events", payload, qos=1, mid=7, retain=False)

    async def read() -> tuple[int, int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_packet(reader)

    kind, flags, body = asyncio.run(read())
    assert (kind, flags) == (PUBLISH, 0b0010)
    topic_len = int.from_bytes(body[:2], "big")
    assert body[2 : 2 + topic_len] == b"siteclock/v1/t-a/events"
    assert int.from_bytes(body[2 + topic_len : 4 + topic_len], "big") == 7
    assert body[4 + topic_len :] == payload


def test_a_simulated_terminals_taps_form_a_signed_chain(tmp_path: Path) -> None:
    [identity] = make_identities(1)
    (tmp_path / f"{identity.terminal_id}.password").write_text("secret\n")
    [terminal] = sim_terminals([identity], WORKPLACE, tmp_path)
    signed = [terminal.take_tap(now=float(i))[1] for i in range(4)]

    keys = {terminal.signer.kid: terminal.signer.public_key_bytes()}
    assert verify_chain(signed, keys) == 4
    assert [s.event.kind for s in signed] == [Kind.IN, Kind.OUT, Kind.IN, Kind.OUT]
    assert sorted(terminal.pending) == [1, 2, 3, 4]
    assert terminal.password == "secret"


def test_prepare_writes_secret_identities_and_registers_them(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    out = tmp_path / "lg"
    assert cli(["prepare", "--dir", str(out), "--count", "3", "--workplace", WORKPLACE,
                "--db", str(db)]) == 0  # fmt: skip

    assert stat.S_IMODE((out / "terminals.json").stat().st_mode) == 0o600
    workplace, identities = load_identities(out / "terminals.json")
    assert workplace == WORKPLACE
    assert (out / "terminals.txt").read_text().split() == [i.terminal_id for i in identities]
    registry = TerminalRegistry(db)
    try:
        for identity in identities:
            record = registry.get(identity.terminal_id)
            assert record is not None
            assert record.workplace == WORKPLACE
            public = Ed25519Signer.from_private_bytes(identity.private_key).public_key_bytes()
            assert list(record.keys.values()) == [public]
    finally:
        registry.close()


def test_heartbeats_keep_their_period_however_many_terminals() -> None:
    """2,000 terminals heartbeating every second: 2,000 heartbeats a second. Sleeping a step
    after each one (the loop's timer rounds to the millisecond) gave barely half, which at
    20,000 terminals stretched the 30 s period past the gateway's 40 s deadline."""
    terminals = [object()] * 2000
    gen = LoadGen(terminals, "127.0.0.1", 1)  # type: ignore[arg-type]
    sent: list[object] = []
    gen.heartbeat = sent.append  # type: ignore[method-assign]

    async def one_period() -> None:
        stop = asyncio.Event()
        beats = asyncio.create_task(gen.heartbeats(1.0, stop))
        await asyncio.sleep(1.0)
        stop.set()
        await beats

    asyncio.run(one_period())
    assert len(sent) >= 0.9 * len(terminals)
