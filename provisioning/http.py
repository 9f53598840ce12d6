"""The enrolment endpoint the gateway serves over HTTPS, and the client a terminal uses.

Routes (JSON in, JSON out; errors are ``{"error": <reason>, "detail": <what to do>}``):

* ``GET  /v1/ca.pem``  - the site CA certificate (public). A fresh terminal has no trust anchor
  yet, so it fetches this once without verification and accepts it only if it is exactly one
  certificate (nothing before or after it) whose full SHA-256 fingerprint (64 hex digits) is
  the one printed next to the enrolment token; it then saves that certificate, re-encoded, and
  nothing else. Every later request is verified against it.
* ``POST /v1/enrol``   - :meth:`EnrolmentService.enrol`; the one-time token is the authentication.
* ``POST /v1/rebind``  - :meth:`Lifecycle.rebind`; token for the new workplace + terminal key.
* ``POST /v1/keys``    - :meth:`Lifecycle.keys`; signed by a current key of the terminal.

The server is cheroot (a maintained, production WSGI server) with the site's TLS certificate,
timeouts and bounded threads and bodies; its TLS handshake runs on a worker thread, not on the
thread that accepts connections, so a client that connects and says nothing holds up no one.
Refusals never tell a caller without a valid token or key anything about a terminal: they all
read ``401 unauthorized`` (see :mod:`provisioning.enrolment`).

Example::

    app = create_app(service, ca_pem=paths.ca_cert.read_text())
    server = serve_tls(app, "0.0.0.0", 8443, paths.server_cert, paths.server_key)
    ...
    server.shutdown()
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cheroot import wsgi
from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, jsonify, request
from urllib3.exceptions import InsecureRequestWarning

from siteclock.gateway.broker import TLS12_CIPHERS
from siteclock.log import fields
from siteclock.provisioning.enrolment import (
    EnrolmentRefused,
    EnrolmentRequest,
    EnrolmentResult,
    EnrolmentService,
)
from siteclock.provisioning.lifecycle import KeyRequest, Lifecycle, RebindRequest

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEADERS = 16 * 1024
MAX_CA_BYTES = 16 * 1024
FINGERPRINT_HEX = 64
"""A CA pin is the whole SHA-256 (256 bits): a prefix is a second-preimage target, not a pin."""
TIMEOUT_S = 10.0
"""Longest wait for a client's bytes (TLS handshake, request line, body) before hanging up."""
THREADS = 8
LISTEN_BACKLOG = 64

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?"
)


def single_certificate(ca_pem: str | bytes) -> x509.Certificate:
    """The one certificate in ``ca_pem``; ValueError if there is not exactly one, or anything
    else besides it (a second certificate after the pinned one would be trusted too)."""
    data = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
    data = data.strip(b" \t\r\n") + b"\n"
    if not _PEM_CERT.fullmatch(data):
        raise ValueError("the CA file must hold exactly one PEM certificate and nothing else")
    return x509.load_pem_x509_certificate(data)


def ca_fingerprint(ca_pem: str | bytes) -> str:
    """SHA-256 of the CA certificate's DER bytes, lower-case hex (what ``token create`` prints).
    Refuses a file that is not exactly one certificate."""
    cert = single_certificate(ca_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def single_ca_pem(ca_pem: str | bytes) -> str:
    """The one certificate in ``ca_pem``, re-encoded as PEM (ValueError unless exactly one)."""
    return single_certificate(ca_pem).public_bytes(serialization.Encoding.PEM).decode()


def pinned_ca_pem(ca_pem: str | bytes, fingerprint: str) -> str:
    """The certificate to trust, re-encoded from what was checked (so what is saved is exactly
    what was pinned), or ValueError if ``fingerprint`` is not its full SHA-256."""
    wanted = normalize_fingerprint(fingerprint)
    cert = single_certificate(ca_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    actual = hashlib.sha256(der).hexdigest()
    if actual != wanted:
        raise ValueError(f"CA fingerprint {actual[:16]}... is not the pinned {wanted[:16]}...")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def normalize_fingerprint(fingerprint: str) -> str:
    """64 lower-case hex digits (colons and spaces ignored), or ValueError."""
    wanted = fingerprint.replace(":", "").replace(" ", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise ValueError(
            f"a CA fingerprint is the full SHA-256: {FINGERPRINT_HEX} hex digits (it is printed "
            "next to the enrolment token), not a prefix"
        )
    return wanted


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


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ with AEAD suites only (the broker's figure)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


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


# --------------------------------------------------------------------------- client


class GatewayError(Exception):
    """The gateway could not be reached, is not who it should be, or refused the request."""

    def __init__(self, message: str, *, reason: str = "unreachable") -> None:
        super().__init__(message)
        self.reason = reason


class GatewayClient:
    """What a terminal calls during provisioning. ``ca_file`` is the pinned site CA."""

    def __init__(self, base_url: str, ca_file: Path, *, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_file = Path(ca_file)
        self.timeout_s = timeout_s

    @staticmethod
    def fetch_ca(base_url: str, fingerprint: str, *, timeout_s: float = 15.0) -> str:
        """Download the site CA (unverified, once) and accept it only if it is exactly one
        certificate whose full SHA-256 is ``fingerprint``; returns that certificate alone."""
        try:
            wanted = normalize_fingerprint(fingerprint)
        except ValueError as exc:
            raise GatewayError(str(exc), reason="bad_fingerprint") from None
        try:
            # Unverified on purpose, once: trust comes from the fingerprint check below.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                response = requests.get(
                    base_url.rstrip("/") + "/v1/ca.pem", verify=False, timeout=timeout_s,
                    stream=True,
                )  # fmt: skip
            with response:
                response.raise_for_status()
                # Whoever answers is not trusted yet: read no more than a certificate needs.
                content = response.raw.read(MAX_CA_BYTES + 1, decode_content=True)
        except (requests.RequestException, OSError) as exc:
            raise GatewayError(f"cannot fetch the site CA from {base_url}: {exc}") from None
        try:
            if len(content) > MAX_CA_BYTES:
                raise ValueError(f"more than {MAX_CA_BYTES} bytes is not one certificate")
            return pinned_ca_pem(content, wanted)
        except ValueError as exc:
            raise GatewayError(
                f"the gateway at {base_url} does not present the pinned site CA ({exc}): wrong "
                "address, or someone in between. Not enrolling.",
                reason="fingerprint_mismatch",
            ) from None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = requests.post(
                self.base_url + path, json=body, verify=str(self.ca_file), timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise GatewayError(f"cannot reach the gateway at {self.base_url}: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            raise GatewayError(
                f"the gateway refused: {payload.get('detail') or response.reason}",
                reason=str(payload.get("error", response.status_code)),
            )
        if not isinstance(payload, dict):
            raise GatewayError("the gateway's answer is not a JSON object", reason="malformed")
        return payload

    def enrol(self, req: EnrolmentRequest) -> EnrolmentResult:
        return EnrolmentResult.from_json(self._post("/v1/enrol", req.to_json()))

    def rebind(self, req: RebindRequest) -> EnrolmentResult:
        return EnrolmentResult.from_json(self._post("/v1/rebind", req.to_json()))

    def keys(self, req: KeyRequest) -> str:
        return str(self._post("/v1/keys", req.to_json())["kid"])
