"""A relay in its own process, for tests that SIGKILL the gateway mid-run.

``python -m tests.support.relay_proc '<json>'`` with keys db, key, url, private_key, read_s,
batch_limit. Runs until killed; verdicts are recorded in the database only.
:func:`spawn_relay` starts one and returns once it is running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from siteclock.gateway.registry import Registry
from siteclock.gateway.relay import Relay, RelayConfig
from tests.support.ciao import FAST_RELAY, client_for

ROOT = Path(__file__).resolve().parents[2]


def spawn_relay(
    tmp_path: Path, url: str, key_file: Path, *, read_s: float, batch_limit: int,
    db: str | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """A relay process on ``tmp_path``'s gateway.db (or the database ``db`` names: a
    PostgreSQL URL) and inss.key, talking to ``url``."""
    args = {
        "db": db or str(tmp_path / "gateway.db"),
        "key": str(tmp_path / "inss.key"),
        "url": url,
        "private_key": str(key_file),
        "read_s": read_s,
        "batch_limit": batch_limit,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.relay_proc", json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"started"
    return proc


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    registry = Registry(args["db"], args["key"])
    client = client_for(
        args["url"], private_pem=Path(args["private_key"]).read_bytes(), read_s=args["read_s"]
    )
    config = RelayConfig(**{**FAST_RELAY, "batch_limit": args["batch_limit"]})  # type: ignore[arg-type]
    relay = Relay(args["db"], client, registry, config=config, on_verdict=lambda t, v: None)
    relay.start()
    print("started", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
