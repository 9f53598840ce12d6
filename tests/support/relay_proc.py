"""A relay in its own process, for tests that SIGKILL the gateway mid-run.

``python -m tests.support.relay_proc '<json>'`` with keys db, key, url, private_key, read_s,
batch_limit. Runs until killed; verdicts are recorded in the database only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gateway.registry import Registry
from gateway.relay import Relay, RelayConfig
from tests.support.ciao import FAST_RELAY, client_for


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
