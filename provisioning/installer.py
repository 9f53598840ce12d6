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

from gateway.pki import write_public, write_secret
from hw.base import Reader
from provisioning.enrolment import EnrolmentRequest, EnrolmentResult
from provisioning.http import GatewayClient, GatewayError, ca_fingerprint
from provisioning.label import LabelInfo, write_label
from provisioning.lifecycle import RebindRequest, sign_key_request
from provisioning.selftest import Check, run_selftest
from provisioning.workplace import WorkplaceBinding
from siteclock.config import ConfigError
from siteclock.protocol import check_terminal_id
from terminal import config as terminal_config
from terminal import identity

STEPS = ("started", "key", "ca", "enrolled", "configured", "tested", "done")
STATE_FILE = "provision-state.json"
CONFIG_FILE = "terminal.toml"
KEY_FILE = "terminal.key"
CA_FILE = "ca.pem"
PASSWORD_FILE = "mqtt.password"
GATEWAY_KEYS_FILE = "gateway-keys.json"
LABEL_FILE = "label.svg"


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
            pem = Path(self.opts.ca_file).read_text()
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
    from terminal.outbox import Outbox

    signer = identity.load(cfg.key_path)
    with Outbox(
        cfg.outbox_path, signer=signer, terminal_id=cfg.terminal_id, workplace=cfg.workplace
    ) as box:
        return box.unsent(limit=100_000)


def drain(cfg: terminal_config.TerminalConfig, timeout_s: float) -> int:
    """Deliver what is queued (service stopped) under the *current* binding; returns what is
    still pending when done or timed out."""
    from terminal.outbox import Outbox
    from terminal.uplink import Uplink

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


def rotate_key(
    data_dir: Path,
    *,
    gateway_url: str,
    service: ServiceControl | None = None,
    drain_timeout_s: float = 120.0,
    out: Callable[[str], None] = print,
) -> int:
    """Replace the signing key with an overlap: add the new key, switch, deliver what the old
    key signed, then revoke the old key. Rerun to finish if the queue did not drain in time."""
    service = service or ServiceControl()
    data_dir = Path(data_dir)
    cfg = terminal_config.load(data_dir / CONFIG_FILE)
    client = GatewayClient(gateway_url, data_dir / CA_FILE)
    key_path, new_path = cfg.key_path, cfg.key_path.with_name(cfg.key_path.name + ".new")
    old_path = cfg.key_path.with_name(cfg.key_path.name + ".old")
    try:
        if not old_path.exists():
            current = identity.load(key_path)
            new = identity.load_or_create(new_path)
            client.keys(sign_key_request(cfg.terminal_id, current=current, add=new))
            out(f"new key {new.kid} registered; old key {current.kid} stays valid meanwhile")
            service.stop()
            os.replace(key_path, old_path)  # keep the old key until its events are delivered
            os.replace(new_path, key_path)
            service.start()
        old = identity.load(old_path)
        new = identity.load(key_path)
        deadline = time.monotonic() + drain_timeout_s
        while any(e.envelope.kid == old.kid for e in _pending(cfg)):
            if time.monotonic() > deadline:
                out(
                    f"events signed by the old key {old.kid} are still queued; it stays valid. "
                    "Run rotate-key again later to finish."
                )
                return 1
            time.sleep(0.5)
        client.keys(sign_key_request(cfg.terminal_id, current=new, revoke_kid=old.kid))
    except GatewayError as exc:
        out(f"FAILED: {exc}")
        return 1
    old_path.unlink()
    out(f"key rotated: now {new.kid}; old key {old.kid} revoked (its past events still verify)")
    return 0
