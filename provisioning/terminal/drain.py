"""Delivering what a stopped terminal still has queued, before its binding or key changes."""

from __future__ import annotations

from typing import Any

from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity


def _pending(cfg: terminal_config.TerminalConfig) -> list[Any]:
    from siteclock.terminal.outbox import Outbox

    signer = identity.load(cfg.key_path)
    with Outbox(
        cfg.outbox_path, signer=signer, terminal_id=cfg.terminal_id, workplace=cfg.workplace
    ) as box:
        return box.unsent(limit=100_000)


def drain(cfg: terminal_config.TerminalConfig, timeout_s: float) -> int:
    """Deliver what is queued (service stopped) under the *current* binding; returns what is
    still pending when done or timed out."""
    from siteclock.terminal.outbox import Outbox
    from siteclock.terminal.uplink import Uplink

    if cfg.uplink is None:
        return len(_pending(cfg))
    signer = identity.load(cfg.key_path)
    with Outbox(
        cfg.outbox_path, signer=signer, terminal_id=cfg.terminal_id, workplace=cfg.workplace
    ) as box:
        if box.stats().depth == 0:
            return 0
        uplink = Uplink(
            cfg.uplink,
            terminal_id=cfg.terminal_id,
            outbox=box,
            status=lambda: {"state": "online", "draining": True},
            on_roster=lambda _r: None,
        )
        uplink.start()
        try:
            uplink.wake()  # send what is queued now, not at the uplink's next turn
            box.wait_until(lambda: box.stats().depth == 0, timeout_s)  # woken by each ack
            return box.stats().depth
        finally:
            uplink.stop()
