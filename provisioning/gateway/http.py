"""The enrolment endpoint the gateway serves over HTTPS (the client is the terminal side's).

Routes (JSON in, JSON out; errors are ``{"error": <reason>, "detail": <what to do>}``):

* ``GET  /v1/ca.pem``  - the site CA certificate (public). A fresh terminal has no trust anchor
  yet, so it fetches this once without verification and accepts it only if it is exactly one
  certificate (nothing before or after it) whose full SHA-256 fingerprint (64 hex digits) is
  the one printed next to the enrolment token; it then saves that certificate, re-encoded, and
  nothing else. Every later request is verified against it.
* ``GET  /v1/broker``  - the broker's host and port terminals connect to (public, as the CA is):
  ``provision run`` checks that the terminal reaches it before it spends the token.
* ``POST /v1/enrol``   - :meth:`EnrolmentService.enrol`; the one-time token is the authentication.
* ``POST /v1/rebind``  - :meth:`Lifecycle.rebind`; token for the new workplace + terminal key.
* ``POST /v1/keys``    - :meth:`Lifecycle.keys`; signed by a current key of the terminal.

The server is cheroot (a maintained, production WSGI server) with the site's TLS certificate,
timeouts and bounded threads and bodies; its TLS handshake runs on a worker thread, not on the
thread that accepts connections, so a client that connects and says nothing holds up no one.
Refusals never tell a caller without a valid token or key anything about a terminal: they all
read ``401 unauthorized`` (see :mod:`provisioning.gateway.service`).

Example::

    app = create_app(service, ca_pem=paths.ca_cert.read_text())
    server = serve_tls(app, "0.0.0.0", 8443, paths.server_cert, paths.server_key)
    ...
    server.shutdown()
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheroot import wsgi
from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter
from flask import Flask, jsonify, request

from siteclock.gateway.tls import server_context
from siteclock.log import fields
from siteclock.provisioning.gateway.lifecycle import Lifecycle
from siteclock.provisioning.gateway.service import EnrolmentService
from siteclock.provisioning.shared.requests import (
    EnrolmentRefused,
    EnrolmentRequest,
    KeyRequest,
    RebindRequest,
)

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


MAX_HEADERS = 16 * 1024


TIMEOUT_S = 10.0
"""Longest wait for a client's bytes (TLS handshake, request line, body) before hanging up."""


THREADS = 8


LISTEN_BACKLOG = 64


def create_app(service: EnrolmentService, *, ca_pem: str) -> Flask:
    app = Flask("siteclock-enrolment")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    lifecycle = Lifecycle(service)

    def answer(action: Callable[[Any], Any]) -> Any:
        body = request.get_json(silent=True)
        try:
            result = action(body)
        except EnrolmentRefused as exc:
            return jsonify(error=exc.public_reason, detail=str(exc)), exc.status
        return jsonify(result), 200

    @app.get("/v1/ca.pem")
    def ca() -> Any:
        return app.response_class(ca_pem, mimetype="application/x-pem-file")

    @app.get("/v1/broker")
    def broker() -> Any:
        # Public like the CA: where terminals connect, so an installer can check it is
        # reachable from the terminal before spending the token (it names no terminal).
        return jsonify(host=service.endpoint.host, port=service.endpoint.port)

    @app.post("/v1/enrol")
    def enrol() -> Any:
        return answer(lambda b: service.enrol(EnrolmentRequest.from_json(b)).to_json())

    @app.post("/v1/rebind")
    def rebind() -> Any:
        return answer(lambda b: lifecycle.rebind(RebindRequest.from_json(b)).to_json())

    @app.post("/v1/keys")
    def keys() -> Any:
        return answer(lambda b: {"kid": lifecycle.keys(KeyRequest.from_json(b))})

    return app


class _LazyHandshakeAdapter(BuiltinSSLAdapter):
    """cheroot's builtin TLS adapter, with the handshake moved off the accepting thread.

    The stock adapter completes the TLS handshake inside ``accept``: one client that opens a
    TCP connection and says nothing stops every other caller until the timeout. Here the
    socket is wrapped without a handshake; OpenSSL performs it on the first read, in a worker
    thread (see :class:`_QuietUntilSpokenServer` for when that happens)."""

    def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
        try:
            wrapped = self.context.wrap_socket(
                sock, do_handshake_on_connect=False, server_side=True
            )
        except OSError as exc:
            from cheroot import errors

            raise errors.FatalSSLAlert(*exc.args) from exc
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}


class _HandshakeFirstConnection(HTTPConnection):
    """Completes the (deferred) TLS handshake before reading a request, in the worker thread,
    within the socket's timeout; a client that fails it (a scanner, a TLS version or suite we
    refuse, a hang-up) is logged in one quiet line and closed."""

    def communicate(self) -> bool:
        if not getattr(self, "siteclock_handshaken", False):
            self.siteclock_handshaken = True
            try:
                self.socket.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.info(
                    "enrolment TLS handshake failed",
                    extra=fields(peer=self.remote_addr, error=type(exc).__name__),
                )
                return False
        return bool(super().communicate())


class _QuietUntilSpokenServer(wsgi.Server):
    """cheroot hands a new connection to a worker thread at once, where a silent client holds
    the thread until the timeout: ``THREADS`` silent clients would stop the service. Here a new
    connection first waits in cheroot's selector (as idle keep-alive connections do), costing
    no thread, and reaches a worker only once the client has sent its first bytes; one that
    never speaks is closed by cheroot's expiry after ``TIMEOUT_S``."""

    ConnectionClass = _HandshakeFirstConnection

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        log.log(level, "enrolment server", extra=fields(detail=msg), exc_info=traceback)

    def process_conn(self, conn: Any) -> None:
        if not getattr(conn, "siteclock_spoke", False):
            conn.siteclock_spoke = True
            self._connections.put(conn)
            return
        super().process_conn(conn)


tls_context = server_context
"""TLS 1.2+ with AEAD suites only (the broker's figure), shared with the console."""


@dataclass
class Server:
    server: wsgi.Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    def shutdown(self) -> None:
        self.server.stop()
        self.thread.join(timeout=10)


def serve_tls(app: Flask, host: str, port: int, cert_file: Path, key_file: Path) -> Server:
    """Serve ``app`` over TLS with cheroot in a background thread; ``port`` 0 picks a free port.

    Bounded: ``THREADS`` requests at a time, ``TIMEOUT_S`` for any client read, bodies of at
    most ``MAX_BODY`` and headers of at most ``MAX_HEADERS`` bytes, ``LISTEN_BACKLOG`` pending
    connections in the kernel."""
    server = _QuietUntilSpokenServer(
        (host, port), app, numthreads=THREADS, max=THREADS, timeout=TIMEOUT_S,
        request_queue_size=LISTEN_BACKLOG, server_name="siteclock-enrolment",
        accepted_queue_size=THREADS * 4, accepted_queue_timeout=1,
    )  # fmt: skip
    server.max_request_body_size = MAX_BODY
    server.max_request_header_size = MAX_HEADERS
    adapter = _LazyHandshakeAdapter(str(cert_file), str(key_file))
    adapter.context = tls_context(cert_file, key_file)
    server.ssl_adapter = adapter
    server.prepare()  # binds now: the port is known and errors surface here
    thread = threading.Thread(target=server.serve, name="enrolment-https", daemon=True)
    thread.start()
    return Server(server, thread)
