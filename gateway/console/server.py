"""The console over HTTPS on cheroot (a maintained production WSGI server), with the site's
certificate: TLS 1.2 or later, AEAD suites only, bounded threads, bodies and timeouts.

Example::

    server = serve_console(app, config)      # binds at once; config.port 0 picks a free port
    print(server.url)
    server.stop()
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from dataclasses import dataclass
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from siteclock.gateway.console.config import ConsoleConfig
from siteclock.gateway.tls import server_context
from siteclock.log import fields

log = logging.getLogger(__name__)

THREADS = 10
TIMEOUT_S = 10.0
MAX_HEADERS = 16 * 1024
MAX_BODY = 4 * 1024 * 1024  # a workers CSV


class ConsoleServerError(RuntimeError):
    """The console cannot be served as configured (the message says what to fix)."""


class _QuietServer(wsgi.Server):
    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError)):
            # A browser closing its connection mid-answer: routine, not a server fault.
            log.debug("console client left", extra=fields(error=type(error).__name__))
            return
        log.log(level, "console server", extra=fields(detail=msg), exc_info=traceback)


@dataclass
class ConsoleServer:
    server: wsgi.Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    @property
    def url(self) -> str:
        host = self.server.bind_addr[0]
        return f"https://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}"

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)


def serve_console(app: Any, config: ConsoleConfig) -> ConsoleServer:
    """Serve ``app`` over HTTPS in a background thread (never plain HTTP: no certificate, no
    console)."""
    if config.cert_file is None or config.key_file is None:
        raise ConsoleServerError(
            "console: cert_file and key_file are required (the site's certificate, e.g. "
            "the broker's pki/server.pem and pki/server.key): the console is served over "
            "HTTPS only"
        )
    try:
        context = server_context(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleServerError(
            f"console: cannot load {config.cert_file} / {config.key_file}: {exc}"
        ) from exc
    server = _QuietServer(
        (config.host, config.port), app, numthreads=THREADS, max=THREADS * 2,
        timeout=TIMEOUT_S, server_name="siteclock-console",
    )  # fmt: skip
    server.max_request_body_size = MAX_BODY
    server.max_request_header_size = MAX_HEADERS
    adapter = BuiltinSSLAdapter(str(config.cert_file), str(config.key_file))
    adapter.context = context
    server.ssl_adapter = adapter
    server.prepare()
    thread = threading.Thread(target=server.serve, name="console-https", daemon=True)
    thread.start()
    return ConsoleServer(server, thread)


@dataclass
class GatewayConsole:
    """The console a running gateway serves: its server and its own database connection."""

    server: ConsoleServer
    db: Any

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        self.db.close()


def serve_gateway_console(cfg: Any, config: ConsoleConfig, **app_options: Any) -> GatewayConsole:
    """Serve the console of the gateway configured by ``cfg`` (a ``GatewayConfig``) on its
    own connection to the gateway database, SQLite file or PostgreSQL (the web threads never
    wait on the relay's)."""
    from siteclock.gateway.console.app import create_app
    from siteclock.gateway.db import RELAY_BUSY_TIMEOUT_S, open_gateway_db

    db, _opened = open_gateway_db(cfg.store, busy_timeout_s=RELAY_BUSY_TIMEOUT_S)
    try:
        # the evidence page seals exports with the gateway's own key (docs/evidence.md)
        extras = {"signing_key_file": cfg.signing_key_file, **app_options.pop("extras", {})}
        app = create_app(db, config, inss_key_file=cfg.inss_key_path, extras=extras,
                         **app_options)  # fmt: skip
        server = serve_console(app, config)
    except BaseException:
        db.close()
        raise
    log.info("console serving", extra=fields(url=server.url))
    return GatewayConsole(server, db)
