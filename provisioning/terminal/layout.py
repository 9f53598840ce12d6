"""Where provisioning keeps its files in the terminal's data directory, and its error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from siteclock.files import write_secret

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


def write_state(path: Path, state: dict[str, Any]) -> None:
    """The provisioning state file, written atomically (0600): a power cut leaves the old one."""
    write_secret(path, (json.dumps(state, indent=2) + "\n").encode())


def update_state(data_dir: Path, **changes: Any) -> None:
    """Change fields of the provisioning state after a rebind or rotation (the label reads
    it); a terminal set up without ``provision run`` has none, and nothing is written."""
    path = Path(data_dir) / STATE_FILE
    if path.exists():
        write_state(path, {**json.loads(path.read_text()), **changes})
