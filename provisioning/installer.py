"""Terminal side of provisioning: the installer's guided flow, and rebind / key rotation.

``siteclock provision run`` takes a fresh terminal to a working member of one worksite:

1. **key**: the terminal's Ed25519 key is generated *here* (``terminal.key``, mode 0600); only
   its public half is ever sent anywhere;
2. **ca**: the site CA is fetched once and pinned by the fingerprint printed with the token;
3. **enrol**: the one-time token, the workplace and the public key (signed by the key) go to the
   gateway, which answers with broker credentials; they are written (``mqtt.password``, 0600);
4. **config**: ``terminal.toml`` is written atomically and loaded back to validate it;
5. **selftest**: reader, broker, end to end, clock, disk (:mod:`provisioning.selftest`);
6. **label**: ``label.svg`` with the QR code naming terminal and worksite.

A state file (``provision-state.json``) records the last completed step. A run interrupted at
any point (power cut, Ctrl-C, network gone) is simply run again with the same command: it
resumes after the last completed step. Until step 4 there is no ``terminal.toml``, so the
terminal service (``ConditionPathExists``) does not start on a half-enrolled terminal. If the
gateway handled the enrolment but its answer was lost, the rerun presents the same token and
key, and the gateway recognises the claimant and issues fresh credentials. A rerun for a
*different* terminal id or workplace starts clean while nothing was enrolled, and is refused
after that (use rebind or decommission).

Example::

    flow = Installer(options, out=print)
    flow.run()        # 0 when the terminal is live, 1 when a step failed (rerun to resume)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siteclock.config import ConfigError
from siteclock.files import write_public, write_secret
from siteclock.hw.base import Reader
from siteclock.protocol import check_terminal_id
from siteclock.provisioning.enrolment import EnrolmentRequest, EnrolmentResult
from siteclock.provisioning.http import GatewayClient, GatewayError, ca_fingerprint, single_ca_pem
from siteclock.provisioning.label import LabelInfo, write_label
from siteclock.provisioning.lifecycle import RebindRequest, sign_key_request
from siteclock.provisioning.selftest import Check, run_selftest
from siteclock.provisioning.workplace import WorkplaceBinding
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity

STEPS = ("started", "key", "ca", "enrolled", "configured", "tested", "done")
STATE_FILE = "provision-state.json"
CONFIG_FILE = "terminal.toml"
KEY_FILE = "terminal.key"
CA_FILE = "ca.pem"
PASSWORD_FILE = "mqtt.password"
GATEWAY_KEYS_FILE = "gateway-keys.json"
LABEL_FILE = "label.svg"


KEY_PROPAGATION_S = 1.5
"""After a key is added, how long until every gateway process accepts events it signs: an
intake that meets a key id it does not know rereads the registry, at most every
``gateway.intake.KEY_REFRESH_S`` (1 s; a test keeps this above it). Not imported from there:
the terminal side should not load the gateway's intake."""


class ProvisioningError(Exception):
    """A provisioning step cannot go on; the message says what to do."""


# --------------------------------------------------------------------------- service control


class ServiceControl:
    """Stops and starts the terminal's systemd unit around provisioning (reader ownership)."""

    def __init__(self, unit: str = "siteclock-terminal.service", *, enabled: bool = True) -> None:
        self.unit = unit
        self.enabled = enabled and shutil.which("systemctl") is not None

    def _run(self, verb: str) -> None:
        if self.enabled:
            subprocess.run(["systemctl", verb, self.unit], check=False, timeout=60)

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("restart")


# --------------------------------------------------------------------------- options and state


@dataclass(frozen=True)
class ProvisionOptions:
    data_dir: Path
    terminal_id: str
    workplace: WorkplaceBinding
    gateway_url: str
    token: str
    reader_spec: str
    ca_fingerprint: str | None = None
    ca_file: Path | None = None
    broker_host: str | None = None
    """Overrides the broker host the gateway names (e.g. an address only this LAN knows)."""
    site_name: str = ""
    pin_factory: str | None = None
    feedback_journal: Path | None = None
    badge_timeout_s: float = 60.0
    ack_timeout_s: float = 30.0
    selftest: bool = True


@dataclass
class State:
    step: str
    terminal_id: str
    workplace: str
    kid: str = ""
    broker_host: str = ""
    broker_port: int = 0
    updated_ns: int = field(default_factory=time.time_ns)

    @property
    def index(self) -> int:
        return STEPS.index(self.step)


def _atomic_text(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _toml_str(value: object) -> str:
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def config_text(
    opts: ProvisionOptions, *, workplace: str, host: str, port: int, data_dir: Path
) -> str:
    lines = [
        "# written by siteclock provision; rerun provision (or rebind) rather than editing",
        f"terminal_id = {_toml_str(opts.terminal_id)}",
        f"workplace = {_toml_str(workplace)}",
        f"data_dir = {_toml_str(data_dir)}",
        f"key_file = {_toml_str(data_dir / KEY_FILE)}",
        "",
        "[reader]",
        f"spec = {_toml_str(opts.reader_spec)}",
        "",
        "[feedback]",
    ]
    if opts.pin_factory:
        lines.append(f"pin_factory = {_toml_str(opts.pin_factory)}")
    if opts.feedback_journal:
        lines.append(f"journal = {_toml_str(opts.feedback_journal)}")
    lines += [
        "",
        "[uplink]",
        f"host = {_toml_str(host)}",
        f"port = {port}",
        "tls = true",
        f"ca_file = {_toml_str(data_dir / CA_FILE)}",
        f"username = {_toml_str(opts.terminal_id)}",
        f"password_file = {_toml_str(data_dir / PASSWORD_FILE)}",
        f"gateway_keys_file = {_toml_str(data_dir / GATEWAY_KEYS_FILE)}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the flow


class Installer:
    """The guided, resumable ``provision run`` flow (see the module docstring)."""

    def __init__(
        self,
        opts: ProvisionOptions,
        *,
        out: Callable[[str], None] = print,
        service: ServiceControl | None = None,
        reader: Reader | None = None,
        interrupt_after: str | None = None,
    ) -> None:
        """``reader``: an open reader for the self-test (tests); default: the spec's reader.
        ``interrupt_after``: raise KeyboardInterrupt after that step (tests of resumption)."""
        check_terminal_id(opts.terminal_id)
        self.opts = opts
        self.out = out
        self.service = service or ServiceControl()
        self.reader = reader
        self.interrupt_after = interrupt_after
        self.dir = Path(opts.data_dir)
        self.state_path = self.dir / STATE_FILE

    # ------------------------------------------------------------------ state

    def load_state(self) -> State | None:
        try:
            raw = json.loads(self.state_path.read_text())
            return State(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ProvisioningError(
                f"{self.state_path} is damaged ({exc}); remove it to start clean"
            ) from None

    def save(self, state: State, step: str) -> None:
        state.step = step
        state.updated_ns = time.time_ns()
        _atomic_text(self.state_path, json.dumps(state.__dict__, indent=2) + "\n", 0o600)
        if self.interrupt_after == step:
            raise KeyboardInterrupt(f"interrupted after {step} (test)")

    def _start_state(self) -> State:
        opts, ref = self.opts, self.opts.workplace.reference
        state = self.load_state()
        config_path = self.dir / CONFIG_FILE
        if state is None and config_path.exists():
            raise ProvisioningError(
                f"{config_path} exists but no provisioning state: this terminal was set up "
                "another way. Decommission it or remove the data directory to start over."
            )
        if state is not None and (state.terminal_id, state.workplace) != (opts.terminal_id, ref):
            if state.index < STEPS.index("enrolled"):
                self.out(
                    f"earlier run for {state.terminal_id} at {state.workplace} never enrolled: "
                    "starting clean"
                )
                state = None
            else:
                raise ProvisioningError(
                    f"this terminal is already enrolled as {state.terminal_id} at "
                    f"{state.workplace}; use 'siteclock provision rebind' to move it, or "
                    "decommission it first"
                )
        if state is None:
            state = State("started", opts.terminal_id, ref)
            self.save(state, "started")
        elif state.step != "started":
            self.out(f"resuming after step '{state.step}'")
        return state

    # ------------------------------------------------------------------ steps

    def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        state = self._start_state()
        if state.step == "done":
            self.out(f"terminal {state.terminal_id} is already provisioned at {state.workplace}")
            return 0
        self.service.stop()
        try:
            if state.index < STEPS.index("key"):
                self._key(state)
            if state.index < STEPS.index("ca"):
                self._ca(state)
            if state.index < STEPS.index("enrolled"):
                self._enrol(state)
            if state.index < STEPS.index("configured"):
                self._configure(state)
            if state.index < STEPS.index("tested") and not self._selftest(state):
                return 1
            if state.index < STEPS.index("done"):
                self._label(state)
                self.save(state, "done")
        except (ProvisioningError, GatewayError) as exc:
            self.out(f"FAILED: {exc}")
            self.out("nothing is half done: fix the cause and run the same command again")
            return 1
        self.service.start()
        self.out(
            f"terminal {state.terminal_id} is live at {state.workplace}; "
            f"label: {self.dir / LABEL_FILE}"
        )
        return 0

    def _key(self, state: State) -> None:
        try:
            signer = identity.load_or_create(self.dir / KEY_FILE)
        except (identity.IdentityError, OSError) as exc:
            raise ProvisioningError(f"signing key: {exc}") from None
        state.kid = signer.kid
        self.out(f"key: {signer.kid} (private key stays on this terminal, mode 0600)")
        self.save(state, "key")

    def _ca(self, state: State) -> None:
        path = self.dir / CA_FILE
        if self.opts.ca_file is not None:
            try:  # exactly one certificate, saved re-encoded: nothing rides along with it
                pem = single_ca_pem(Path(self.opts.ca_file).read_bytes())
            except ValueError as exc:
                raise ProvisioningError(f"{self.opts.ca_file}: {exc}") from None
        elif self.opts.ca_fingerprint:
            pem = GatewayClient.fetch_ca(self.opts.gateway_url, self.opts.ca_fingerprint)
        else:
            raise ProvisioningError(
                "give --ca-fingerprint (printed next to the token) or --ca-file"
            )
        write_public(path, pem.encode())
        self.out(f"site CA pinned: {ca_fingerprint(pem)[:16]}...")
        self.save(state, "ca")

    def _enrol(self, state: State) -> None:
        signer = identity.load(self.dir / KEY_FILE)
        request = EnrolmentRequest(
            self.opts.token, self.opts.terminal_id, self.opts.workplace, b""
        ).signed_by(signer)
        client = GatewayClient(self.opts.gateway_url, self.dir / CA_FILE)
        result = client.enrol(request)
        self._store_credentials(result)
        state.broker_host = self.opts.broker_host or result.endpoint.host
        state.broker_port = result.endpoint.port
        self.out(f"enrolled at the gateway as {result.terminal_id} for {result.workplace}")
        self.save(state, "enrolled")

    def _store_credentials(self, result: EnrolmentResult) -> None:
        write_secret(self.dir / PASSWORD_FILE, result.mqtt_password.encode())
        keys = json.dumps(result.gateway_keys, indent=2, sort_keys=True) + "\n"
        write_public(self.dir / GATEWAY_KEYS_FILE, keys.encode())

    def _configure(self, state: State) -> None:
        path = self.dir / CONFIG_FILE
        text = config_text(
            self.opts,
            workplace=state.workplace,
            host=state.broker_host,
            port=state.broker_port,
            data_dir=self.dir,
        )
        _atomic_text(path, text, 0o600)
        try:
            terminal_config.load(path)
        except ConfigError as exc:
            path.unlink(missing_ok=True)
            raise ProvisioningError(f"the written configuration does not load: {exc}") from None
        self.out(f"configuration written and checked: {path}")
        self.save(state, "configured")

    def _selftest(self, state: State) -> bool:
        if not self.opts.selftest:
            self.out("self-test skipped (--no-selftest)")
            self.save(state, "tested")
            return True
        cfg = terminal_config.load(self.dir / CONFIG_FILE)
        wait = self.opts.badge_timeout_s
        self.out(f"self-test: tap a test badge on the reader within {wait:.0f} s")

        def show(check: Check) -> None:
            self.out(check.line())

        report = run_selftest(
            cfg,
            reader=self.reader,
            badge_timeout_s=self.opts.badge_timeout_s,
            ack_timeout_s=self.opts.ack_timeout_s,
            on_check=show,
        )
        self.reader = None  # closed by the self-test; a rerun opens the configured one
        if not report.passed:
            self.out("self-test FAILED: fix what the FAIL lines say, then run the same command")
            return False
        self.out("self-test PASSED")
        self.save(state, "tested")
        return True

    def _label(self, state: State) -> None:
        info = LabelInfo(state.terminal_id, state.workplace, state.kid, self.opts.site_name)
        write_label(self.dir / LABEL_FILE, info)


# --------------------------------------------------------------------------- rebind / rotate


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
            deadline = time.monotonic() + timeout_s
            while box.stats().depth and time.monotonic() < deadline:
                uplink.wake()
                time.sleep(0.05)
            return box.stats().depth
        finally:
            uplink.stop()


def rebind(
    data_dir: Path,
    *,
    workplace: WorkplaceBinding,
    token: str,
    reason: str,
    gateway_url: str,
    confirm: bool,
    service: ServiceControl | None = None,
    drain_timeout_s: float = 120.0,
    out: Callable[[str], None] = print,
) -> int:
    """Move this terminal to another workplace (see :mod:`provisioning.lifecycle`).

    Everything queued under the old binding is delivered under it first; the switch happens
    only with an empty queue and the service stopped, so no event is ever relabelled.
    """
    service = service or ServiceControl()
    data_dir = Path(data_dir)
    cfg = terminal_config.load(data_dir / CONFIG_FILE)
    if not confirm:
        out("rebind needs confirmation (--yes, or retype the new reference when asked)")
        return 2
    if cfg.workplace == workplace.reference:
        out(f"terminal is already bound to {workplace.reference}")
        return 2
    service.stop()
    try:
        left = drain(cfg, drain_timeout_s)
        if left:
            out(
                f"FAILED: {left} event(s) queued under {cfg.workplace} have not reached the "
                "gateway yet; they must be delivered under the old binding first. Check the "
                "network and run rebind again."
            )
            service.start()
            return 1
        signer = identity.load(cfg.key_path)
        req = RebindRequest(cfg.terminal_id, token, workplace, reason, True).signed_by(signer)
        result = GatewayClient(gateway_url, data_dir / CA_FILE).rebind(req)
    except GatewayError as exc:
        out(f"FAILED: {exc}; the terminal stays bound to {cfg.workplace}")
        service.start()
        return 1
    write_secret(data_dir / PASSWORD_FILE, result.mqtt_password.encode())
    text = (data_dir / CONFIG_FILE).read_text()
    old_line = f"workplace = {_toml_str(cfg.workplace)}"
    text = text.replace(old_line, f"workplace = {_toml_str(workplace.reference)}", 1)
    _atomic_text(data_dir / CONFIG_FILE, text, 0o600)
    terminal_config.load(data_dir / CONFIG_FILE)
    state_path = data_dir / STATE_FILE
    if state_path.exists():
        raw = json.loads(state_path.read_text())
        raw["workplace"] = workplace.reference
        _atomic_text(state_path, json.dumps(raw, indent=2) + "\n", 0o600)
    service.start()
    out(f"terminal {cfg.terminal_id} moved from {cfg.workplace} to {workplace.reference}")
    return 0


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
    """Replace the signing key with an overlap (see :mod:`provisioning.lifecycle`).

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
            # Each gateway process rereads a terminal's keys at most this often: a tap signed
            # by the new key any sooner could be refused (and only resent much later).
            out(f"waiting {KEY_PROPAGATION_S:.1f} s for every gateway process to know it")
            time.sleep(KEY_PROPAGATION_S)
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
    _record_kid(data_dir, new.kid)
    out(
        f"key rotated: now {new.kid}; old key {old.kid} revoked (its events still verify with "
        f"{files.retired_public(old.kid).name}). Reprint the label: siteclock provision label"
    )
    return 0


def _record_kid(data_dir: Path, kid: str) -> None:
    """Keep the provisioning state's key id current (the label shows it)."""
    state_path = data_dir / STATE_FILE
    if state_path.exists():
        raw = json.loads(state_path.read_text())
        raw["kid"] = kid
        _atomic_text(state_path, json.dumps(raw, indent=2) + "\n", 0o600)
