"""Rebind, terminal side: deliver everything under the old binding, then switch workplace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from siteclock.config import ConfigError
from siteclock.files import write_secret
from siteclock.provisioning.shared.requests import RebindRequest
from siteclock.provisioning.shared.workplace import WorkplaceBinding
from siteclock.provisioning.terminal.client import GatewayClient, GatewayError
from siteclock.provisioning.terminal.config_file import rebind_config
from siteclock.provisioning.terminal.drain import drain
from siteclock.provisioning.terminal.layout import (
    CA_FILE,
    CONFIG_FILE,
    PASSWORD_FILE,
    ProvisioningError,
    update_state,
)
from siteclock.provisioning.terminal.systemd import ServiceControl
from siteclock.terminal import config as terminal_config
from siteclock.terminal import identity


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
    """Move this terminal to another workplace (see :mod:`provisioning.gateway.lifecycle`).

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
    try:
        rebind_config(data_dir / CONFIG_FILE, workplace.reference)
    except (ProvisioningError, ConfigError) as exc:
        out(
            f"FAILED: the gateway moved {cfg.terminal_id} to {workplace.reference} but its "
            f"configuration could not be rewritten ({exc}); the service stays stopped. Fix "
            f"{data_dir / CONFIG_FILE}, then rerun provisioning"
        )
        return 1
    update_state(data_dir, workplace=workplace.reference)
    service.start()
    out(f"terminal {cfg.terminal_id} moved from {cfg.workplace} to {workplace.reference}")
    return 0
