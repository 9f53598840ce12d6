"""Power cuts while ``siteclock provision run`` provisions a terminal whose data directory is
on the power-loss filesystem (tests/support/powerfs.py), against a real site: Mosquitto, the
gateway intake, HTTPS enrolment (the site fixture of test_provisioning_e2e).

The cut lands anywhere in the run: while the key is made, the CA pinned, the token claimed,
the credentials and the configuration written. Power back, the installer runs the same command
again, as the docs tell them to; it must finish, the key on the disk must be the one the gateway
registered (a key lost to the cut would make the token look claimed by a stranger), and the
broker credentials on the disk must log in.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from siteclock.hw import sim
from siteclock.provisioning.cli import provision_cli
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity
from siteclock.terminal.outbox import verify_cli
from siteclock.terminal.service import Terminal
from tests.integration.test_provisioning_e2e import (  # noqa: F401 - the module's fixture
    COORDS,
    WP1,
    WP2,
    Site,
    site,
    uplink_login,
)
from tests.support.powerfs import MODES, PowerFS, fuse_available
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fuse_available(), reason="needs /dev/fuse, fusermount3 and mfusepy"),
]

CUTS = 5


def run_args(at: Site, data: Path, token_file: Path, terminal_id: str) -> list[str]:
    return [
        "run", "--data-dir", str(data), "--terminal-id", terminal_id, "--workplace", WP1,
        "--coordinates", COORDS, "--gateway", at.url, "--token-file", str(token_file),
        "--ca-fingerprint", at.fingerprint, "--no-selftest", "--no-service",
    ]  # fmt: skip


def provisioning(command: list[str]) -> subprocess.Popen:
    """``siteclock provision COMMAND`` in its own process, which a power cut can kill."""
    return subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "provision", *command],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def power_cut(fs: PowerFS, proc: subprocess.Popen, rng: random.Random, mode: str) -> None:
    """The power goes under ``proc``; the disk comes back with what was synced."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs.cut(mode, seed=rng.randrange(2**32))
    fs.start()


def seeded() -> random.Random:
    seed = int(os.environ.get("POWER_CUT_SEED", random.randrange(2**32)))
    print(f"POWER_CUT_SEED={seed}")
    return random.Random(seed)


def test_provisioning_cut_anywhere_resumes_with_the_key_the_gateway_knows(
    site: Site,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    rng = seeded()
    tag = rng.randrange(1000)
    landed: list[str] = []  # the step each cut left in provision-state.json
    with PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as fs:

        def start_run(name: str) -> tuple[subprocess.Popen, list[str], Path]:
            token_file = tmp_path / f"{name}.token"
            token_file.write_text(site.tokens.create(WP1, ttl_s=3600).token + "\n")
            args = run_args(site, fs.mount / name, token_file, name)
            return provisioning(args), args, fs.mount / name

        # One run without a cut says how long a run takes here; the cuts spread over it.
        started = time.monotonic()
        proc, _, _ = start_run(f"t-pcut-{tag:03d}-whole")
        assert proc.wait(timeout=60) == 0
        whole_s = time.monotonic() - started
        for cut in range(CUTS):
            terminal_id = f"t-pcut-{tag:03d}-{cut}"
            proc, args, data = start_run(terminal_id)
            time.sleep(whole_s * (cut + rng.random()) / CUTS)
            power_cut(fs, proc, rng, MODES[cut % len(MODES)])

            state = data / "provision-state.json"
            landed.append(json.loads(state.read_text())["step"] if state.exists() else "none")
            assert provision_cli(args) == 0, f"cut {cut}: the rerun did not finish"
            record = site.registry.get(terminal_id)
            assert record is not None
            key = identity.load(data / "terminal.key")
            assert key.kid in record.keys, f"cut {cut}: the key on disk is not the enrolled one"
            pub = identity.public_path(data / "terminal.key").read_text().strip()
            assert pub == key.public_key_bytes().hex()
            assert uplink_login(data / "terminal.toml").name == "PASS"
    print(f"cuts left the run at: {landed}")
    assert len(set(landed)) > 1, f"every cut landed at the same step: {landed}"


def cut_during(fs: PowerFS, command: list[str], rng: random.Random, after_s: float) -> None:
    """Run ``siteclock provision COMMAND`` and cut the power ``after_s`` seconds in."""
    proc = provisioning(command)
    time.sleep(after_s)
    power_cut(fs, proc, rng, MODES[rng.randrange(len(MODES))])


def test_key_rotation_and_rebind_cut_anywhere_resume_and_keep_the_history_verifiable(
    site: Site,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    rng = seeded()
    terminal_id = f"t-rcut-{rng.randrange(1000):03d}"
    sock = tmp_path / "taps.sock"
    with PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as fs:
        data = fs.mount / terminal_id
        token_file = tmp_path / "token"
        token_file.write_text(site.tokens.create(WP1, ttl_s=3600).token + "\n")
        args = [*run_args(site, data, token_file, terminal_id), "--reader", f"sim:{sock}"]
        assert provision_cli(args) == 0
        cfg = terminal_config.load(data / "terminal.toml")
        term = Terminal(cfg, pin_factory=MockFactory())
        term.start()
        try:  # a history to keep verifiable: two taps, delivered
            wait_for(lambda: sock.exists(), what="reader socket")
            assert sim.send_taps(str(sock), ["sim:0E0E", "sim:0F0F"]) == ["ok", "ok"]
            wait_for(lambda: term.outbox.stats().total >= 2, what="taps recorded")
            wait_for(lambda: term.outbox.stats().depth == 0, what="gateway acknowledgements")
        finally:
            term.stop()

        rotate = ["rotate-key", "--data-dir", str(data), "--gateway", site.url, "--no-service",
                  "--drain-timeout", "20"]  # fmt: skip
        for after_s in (rng.uniform(0.1, 0.75), rng.uniform(0.75, 1.8)):
            cut_during(fs, rotate, rng, after_s)
            assert provision_cli(rotate) == 0, "the rotation did not resume"
            key = identity.load(data / "terminal.key")
            record = site.registry.get(terminal_id)
            assert record is not None
            assert key.kid in record.keys, "the key on disk is not one the gateway accepts"
            pubs = sorted(data.glob("terminal.key*.pub"))
            keyargs = [a for pub in pubs for a in ("--public-key", str(pub))]
            assert verify_cli(["--db", str(data / "outbox.db"), *keyargs]) == 0

        new_token = tmp_path / "rebind.token"
        new_token.write_text(site.tokens.create(WP2, ttl_s=3600).token + "\n")
        rebind = ["rebind", "--data-dir", str(data), "--workplace", WP2, "--coordinates", COORDS,
                  "--gateway", site.url, "--token-file", str(new_token), "--reason", "moved",
                  "--yes", "--no-service"]  # fmt: skip
        cut_during(fs, rebind, rng, rng.uniform(0.1, 0.9))
        finished = terminal_config.load(data / "terminal.toml").workplace == WP2
        # Finished before the cut, a rerun answers "already bound" (2); otherwise it resumes.
        assert provision_cli(rebind) == (2 if finished else 0), "the rebind did not resume"
        assert terminal_config.load(data / "terminal.toml").workplace == WP2
        assert uplink_login(data / "terminal.toml").name == "PASS"
