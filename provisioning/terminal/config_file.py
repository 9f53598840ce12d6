"""``terminal.toml`` as provisioning writes it: built as data, written by tomli-w, read back.

The file is never patched as text. A rebind loads it (tomllib), changes the one value, writes the
whole document again and loads it back through the terminal's own loader, checking that it now
says what was asked: a file an installer reformatted by hand can no longer make a rebind keep
the old workplace in silence. Comments are not kept; the header says to rerun provisioning (or
rebind) rather than edit the file.

Example::

    write_config(path, config_document(opts, workplace=ref, host=h, port=8883, data_dir=d))
    rebind_config(path, "2Y1003SQ5VSSZ")
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from siteclock.files import write_secret
from siteclock.provisioning.terminal.layout import (
    CA_FILE,
    GATEWAY_KEYS_FILE,
    KEY_FILE,
    PASSWORD_FILE,
    ProvisioningError,
)
from siteclock.terminal import config as terminal_config

HEADER = "# written by siteclock provision; rerun provision (or rebind) rather than editing\n"


def config_document(
    opts: Any, *, workplace: str, host: str, port: int, data_dir: Path
) -> dict[str, Any]:
    """The terminal's configuration for provisioning options ``opts`` (a ``ProvisionOptions``)."""
    feedback: dict[str, str] = {}
    if opts.pin_factory:
        feedback["pin_factory"] = str(opts.pin_factory)
    if opts.feedback_journal:
        feedback["journal"] = str(opts.feedback_journal)
    return {
        "terminal_id": opts.terminal_id,
        "workplace": workplace,
        "data_dir": str(data_dir),
        "key_file": str(data_dir / KEY_FILE),
        "reader": {"spec": opts.reader_spec},
        "feedback": feedback,
        "uplink": {
            "host": host,
            "port": port,
            "tls": True,
            "ca_file": str(data_dir / CA_FILE),
            "username": opts.terminal_id,
            "password_file": str(data_dir / PASSWORD_FILE),
            "gateway_keys_file": str(data_dir / GATEWAY_KEYS_FILE),
        },
    }


def write_config(path: Path, document: dict[str, Any]) -> terminal_config.TerminalConfig:
    """Write ``document`` atomically (0600) and return it as the terminal service will load it.

    Raises :class:`ProvisioningError` when what is read back differs from what was meant, and
    the terminal's :class:`~siteclock.config.ConfigError` when the terminal would refuse it."""
    text = HEADER + tomli_w.dumps(document)
    if tomllib.loads(text) != document:
        raise ProvisioningError(f"{path}: the configuration does not read back as written")
    write_secret(path, text.encode())
    return terminal_config.load(path)


def rebind_config(path: Path, workplace: str) -> terminal_config.TerminalConfig:
    """Bind the configuration at ``path`` to ``workplace``, keeping every other value."""
    with open(path, "rb") as fh:
        document = tomllib.load(fh)
    document["workplace"] = workplace
    cfg = write_config(path, document)
    if cfg.workplace != workplace:
        raise ProvisioningError(f"{path} still names {cfg.workplace}, not {workplace}")
    return cfg
