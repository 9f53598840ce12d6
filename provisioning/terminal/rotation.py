"""Key rotation, terminal side: a new key with an overlap, the old one revoked once delivered."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siteclock.files import write_public
from siteclock.provisioning.shared.requests import sign_key_request
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from siteclock.provisioning.terminal.drain import drain
from siteclock.provisioning.terminal.layout import CA_FILE, CONFIG_FILE, update_state
from siteclock.provisioning.terminal.systemd import ServiceControl
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity


@dataclass(frozen=True)
class KeyFiles:
    """The key files of a rotation, all next to ``terminal.key``.

    ``current`` is what the terminal service signs with. ``new`` exists from the moment the
    new key is made until the switch; ``old`` from the switch until the old key is revoked.
    Which of them exist tells a rerun where an interrupted rotation stopped.
    """

    current: Path

    @property
    def new(self) -> Path:
        return self.current.with_name(self.current.name + ".new")

    @property
    def old(self) -> Path:
        return self.current.with_name(self.current.name + ".old")

    def retired_public(self, kid: str) -> Path:
        """Where a revoked key's public half is kept (``terminal.key.<kid>.pub``): evidence
        it signed must still verify offline, with ``verify-chain`` or ``Outbox.verify``."""
        return self.current.with_name(f"{self.current.name}.{kid}.pub")


def _switch_keys(files: KeyFiles) -> None:
    """Make the new key current, keeping the old one as ``terminal.key.old``.

    ``terminal.key`` exists at every instant: the old key gets a second name (a hard link)
    first, then the new key replaces ``terminal.key`` in one atomic rename. A terminal service
    that finds no key file creates a fresh one, which the gateway does not know, so a gap
    between two renames could cost every tap signed with that stray key. Safe to repeat.
    """
    if not files.old.exists():
        os.link(files.current, files.old)
    if files.new.exists():
        os.replace(files.new, files.current)
    fd = os.open(files.current.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames survive a power cut
    finally:
        os.close(fd)
    # The public half that ``verify-chain --public-key`` and the label read follows the key.
    identity.public_path(files.new).unlink(missing_ok=True)
    _write_public_key(identity.public_path(files.current), identity.load(files.current))


def _write_public_key(path: Path, signer: Any) -> None:
    write_public(path, (signer.public_key_bytes().hex() + "\n").encode())


def _old_key_pending(cfg: terminal_config.TerminalConfig, old_kid: str) -> int:
    """How many events signed by ``old_kid`` are not acknowledged by the gateway yet.

    Events are signed in sequence order and the key changes once, so the events of the old key
    are the oldest pending ones: counting stops at the first event signed by another key.
    """
    from siteclock.terminal.outbox import Outbox

    signer = identity.load(cfg.key_path)  # the outbox wants one; nothing is signed here
    with Outbox(
        cfg.outbox_path, signer=signer, terminal_id=cfg.terminal_id, workplace=cfg.workplace
    ) as box:
        count, after = 0, 0
        while page := box.unsent(after_seq=after, limit=500):
            for signed in page:
                if signed.envelope.kid != old_kid:
                    return count
                count += 1
            after = page[-1].event.seq
        return count


def _wait_old_key_delivered(
    cfg: terminal_config.TerminalConfig,
    old_kid: str,
    service: ServiceControl,
    timeout_s: float,
) -> int:
    """Wait until nothing signed by ``old_kid`` is queued; returns what is still queued.

    With the service managed here, the running terminal service delivers (it resends what the
    old key signed, as it was signed). Without it (``--no-service``, no systemd) this command
    delivers itself, as ``rebind`` does: the terminal service must then not be running.
    """
    if not service.enabled:
        drain(cfg, timeout_s)
        return _old_key_pending(cfg, old_kid)
    # A poll, on purpose: the acks are committed by the terminal service, another process,
    # which no in-process condition (Outbox.wait_until) can hear; the outbox file is the only
    # thing both share. Each check is one short indexed read, twice a second, until it drains.
    deadline = time.monotonic() + timeout_s
    while (left := _old_key_pending(cfg, old_kid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def rotate_key(
    data_dir: Path,
    *,
    gateway_url: str,
    service: ServiceControl | None = None,
    drain_timeout_s: float = 120.0,
    out: Callable[[str], None] = print,
) -> int:
    """Replace the signing key with an overlap (see :mod:`provisioning.gateway.lifecycle`).

    1. a new key ``terminal.key.new`` is made here and registered at the gateway (signed by the
       current key, and by the new key to prove possession); the old key stays valid;
    2. the service is stopped, the new key becomes ``terminal.key`` (the old one is kept as
       ``terminal.key.old``), the service is started again: new taps are signed by the new key;
    3. the events the old key signed and that are still queued are delivered, as signed;
    4. only then the old key is revoked (signed by the new key), its private half deleted and
       its public half kept as ``terminal.key.<kid>.pub`` so its events still verify offline.

    Interrupted anywhere (or the queue did not drain within ``drain_timeout_s``), the same
    command run again resumes where it stopped. Returns 0 when rotated, 1 otherwise.
    """
    service = service or ServiceControl()
    data_dir = Path(data_dir)
    cfg = terminal_config.load(data_dir / CONFIG_FILE)
    client = GatewayClient(gateway_url, data_dir / CA_FILE)
    files = KeyFiles(cfg.key_path)
    try:
        if not files.old.exists():
            current = identity.load(files.current)
            new = identity.load_or_create(files.new)  # a rerun registers the same new key
            client.keys(sign_key_request(cfg.terminal_id, current=current, add=new))
            out(f"new key {new.kid} registered; old key {current.kid} stays valid meanwhile")
        if files.new.exists():  # not switched yet, or interrupted in the middle of the switch
            # No wait needed: a gateway process that meets the new key id sees the terminal's
            # key count changed in the database and rereads its keys on that first event.
            service.stop()
            try:
                _switch_keys(files)
            finally:
                service.start()
        old, new = identity.load(files.old), identity.load(files.current)
        left = _wait_old_key_delivered(cfg, old.kid, service, drain_timeout_s)
        if left:
            out(
                f"{left} event(s) signed by the old key {old.kid} are still queued; it stays "
                "valid. Check the network, then run rotate-key again to finish."
            )
            return 1
        client.keys(sign_key_request(cfg.terminal_id, current=new, revoke_kid=old.kid))
    except GatewayError as exc:
        out(f"FAILED: {exc}; run rotate-key again to finish")
        return 1
    except (identity.IdentityError, OSError) as exc:
        out(f"FAILED: key files in {files.current.parent}: {exc}")
        return 1
    _write_public_key(files.retired_public(old.kid), old)
    files.old.unlink()  # the private half of a revoked key has no use left
    update_state(data_dir, kid=new.kid)  # the label shows the key id
    out(
        f"key rotated: now {new.kid}; old key {old.kid} revoked (its events still verify with "
        f"{files.retired_public(old.kid).name}). Reprint the label: siteclock provision label"
    )
    return 0
