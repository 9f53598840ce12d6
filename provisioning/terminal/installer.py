"""Terminal side of provisioning: the installer's guided, resumable flow.

``siteclock provision run`` takes a fresh terminal to a working member of one worksite:

1. **key**: the terminal's Ed25519 key is generated *here* (``terminal.key``, mode 0600); only
   its public half is ever sent anywhere;
2. **ca**: the site CA is fetched once and pinned by the fingerprint printed with the token;
3. **enrol**: the one-time token, the workplace and the public key (signed by the key) go to the
   gateway, which answers with broker credentials; they are written (``mqtt.password``, 0600);
4. **config**: ``terminal.toml`` is written atomically and loaded back to validate it;
5. **selftest**: reader, broker, end to end, clock, disk (:mod:`provisioning.terminal.selftest`);
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from siteclock.config import ConfigError
from siteclock.files import make_dir_durably, write_public, write_secret
from siteclock.hw.base import Reader
from siteclock.protocol import check_terminal_id
from siteclock.provisioning.shared.ca import ca_fingerprint, single_ca_pem
from siteclock.provisioning.shared.requests import EnrolmentRequest, EnrolmentResult
from siteclock.provisioning.shared.workplace import WorkplaceBinding
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from siteclock.provisioning.terminal.config_file import config_document, write_config
from siteclock.provisioning.terminal.label import LabelInfo, write_label
from siteclock.provisioning.terminal.layout import (
    CA_FILE,
    CONFIG_FILE,
    GATEWAY_KEYS_FILE,
    KEY_FILE,
    LABEL_FILE,
    PASSWORD_FILE,
    STATE_FILE,
    STEPS,
    ProvisioningError,
    write_state,
)
from siteclock.provisioning.terminal.selftest import Check, run_selftest
from siteclock.provisioning.terminal.systemd import ServiceControl
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity


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
        write_state(self.state_path, state.__dict__)
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
        make_dir_durably(self.dir)  # its name must survive a power cut, as its files do
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
        document = config_document(
            self.opts,
            workplace=state.workplace,
            host=state.broker_host,
            port=state.broker_port,
            data_dir=self.dir,
        )
        try:
            write_config(path, document)
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
