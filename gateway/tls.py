"""The TLS settings of the site's HTTPS servers (the enrolment endpoint, the console): the
broker's figure, TLS 1.2 or later with AEAD suites only, and the site's certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from siteclock.gateway.broker import TLS12_CIPHERS


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context for ``cert_file``/``key_file`` (``OSError``/``ssl.SSLError`` when they
    cannot be loaded)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
