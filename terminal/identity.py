"""The terminal's signing identity: one Ed25519 key, generated on the terminal, kept in a 0600 file.

The key-file code is the core's (:mod:`siteclock.keys`), shared with the gateway's roster key;
this module names it in the terminal's words.

Example::

    signer = load_or_create(Path("/var/lib/siteclock/terminal.key"))
    signer.kid   # "3f2a..." the name the gateway knows this key by
"""

from siteclock.keys import (
    KEY_SIZE,
    IdentityError,
    KeyFileInsecure,
    KeyFileInvalid,
    create,
    load,
    load_or_create,
    public_path,
)

__all__ = [
    "KEY_SIZE",
    "IdentityError",
    "KeyFileInsecure",
    "KeyFileInvalid",
    "create",
    "load",
    "load_or_create",
    "public_path",
]
