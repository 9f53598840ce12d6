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

from siteclock.provisioning.cli import provision_cli
from siteclock.terminal import identity
from tests.integration.test_provisioning_e2e import (  # noqa: F401 - the module's fixture
    COORDS,
    WP1,
    Site,
    site,
    uplink_login,
)
from tests.support.powerfs import MODES, PowerFS, fuse_available

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


def test_provisioning_cut_anywhere_resumes_with_the_key_the_gateway_knows(
    site: Site,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("POWER_CUT_SEED", random.randrange(2**32)))
    print(f"POWER_CUT_SEED={seed}")
    rng = random.Random(seed)
    landed: list[str] = []  # the step each cut left in provision-state.json
    with PowerFS(tmp_path / "mnt", tmp_path / "disk.img") as fs:

        def start_run(name: str) -> tuple[subprocess.Popen, list[str], Path]:
            token_file = tmp_path / f"{name}.token"
            token_file.write_text(site.tokens.create(WP1, ttl_s=3600).token + "\n")
            args = run_args(site, fs.mount / name, token_file, name)
            proc = subprocess.Popen(
                [sys.executable, "-m", "siteclock.cli", "provision", *args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            return proc, args, fs.mount / name

        # One run without a cut says how long a run takes here; the cuts spread over it.
        started = time.monotonic()
        proc, _, _ = start_run(f"t-pcut-{seed % 1000:03d}-whole")
        assert proc.wait(timeout=60) == 0
        whole_s = time.monotonic() - started
        for cut in range(CUTS):
            terminal_id = f"t-pcut-{seed % 1000:03d}-{cut}"
            proc, args, data = start_run(terminal_id)
            time.sleep(whole_s * (cut + rng.random()) / CUTS)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            fs.cut(MODES[cut % len(MODES)], seed=rng.randrange(2**32))
            fs.start()

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
