"""The enrolment endpoint the gateway serves over HTTPS, and the client a terminal uses.

Routes (JSON in, JSON out; errors are ``{"error": <reason>, "detail": <what to do>}``):

* ``GET  /v1/ca.pem``  - the site CA certificate (public). A fresh terminal has no trust anchor
  yet, so it fetches this once without verification and accepts it only if its SHA-256
  fingerprint starts with the one printed next to the enrolment token (at least 16 hex
  digits). Every later request is verified against it.
* ``POST /v1/enrol``   - :meth:`EnrolmentService.enrol`; the one-time token is the authentication.
* ``POST /v1/rebind``  - :meth:`Lifecycle.rebind`; token for the new workplace + terminal key.
* ``POST /v1/keys``    - :meth:`Lifecycle.keys`; signed by a current key of the terminal.

The server is Werkzeug's threaded server with the site's TLS certificate: a handful of
installers a day, no web framework features beyond routing needed.

Example::

    app = create_app(service, ca_pem=paths.ca_cert.read_text())
    server = serve_tls(app, "0.0.0.0", 8443, paths.server_cert, paths.server_key)
    ...
    server.shutdown()
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, jsonify, request
from urllib3.exceptions import InsecureRequestWarning
from werkzeug.serving import BaseWSGIServer, make_server

from provisioning.enrolment import (
    EnrolmentRefused,
    EnrolmentRequest,
    EnrolmentResult,
    EnrolmentService,
)
from provisioning.lifecycle import KeyRequest, Lifecycle, RebindRequest

MAX_BODY = 64 * 1024
MIN_FINGERPRINT_HEX = 16


def ca_fingerprint(ca_pem: str | bytes) -> str:
    """SHA-256 of the CA certificate's DER bytes, lower-case hex (what ``token create`` prints)."""
    data = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
    cert = x509.load_pem_x509_certificate(data)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def create_app(service: EnrolmentService, *, ca_pem: str) -> Flask:
    app = Flask("siteclock-enrolment")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    lifecycle = Lifecycle(service)

    def answer(action: Callable[[Any], Any]) -> Any:
        body = request.get_json(silent=True)
        try:
            result = action(body)
        except EnrolmentRefused as exc:
            return jsonify(error=exc.reason, detail=str(exc)), exc.status
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


@dataclass
class Server:
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


def serve_tls(app: Flask, host: str, port: int, cert_file: Path, key_file: Path) -> Server:
    """Serve ``app`` over TLS in a background thread; ``port`` 0 picks a free port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    server = make_server(host, port, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, name="enrolment-http", daemon=True)
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
        """Download the site CA (unverified, once) and accept it only if it matches
        ``fingerprint`` (a prefix of its SHA-256, at least 16 hex digits)."""
        wanted = fingerprint.replace(":", "").replace(" ", "").lower()
        if len(wanted) < MIN_FINGERPRINT_HEX or any(c not in "0123456789abcdef" for c in wanted):
            raise GatewayError(
                f"CA fingerprint {fingerprint!r} must be at least {MIN_FINGERPRINT_HEX} hex "
                "digits (it is printed next to the enrolment token)",
                reason="bad_fingerprint",
            )
        try:
            # Unverified on purpose, once: trust comes from the fingerprint check below.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                response = requests.get(
                    base_url.rstrip("/") + "/v1/ca.pem", verify=False, timeout=timeout_s
                )
            response.raise_for_status()
            actual = ca_fingerprint(response.text)
        except (requests.RequestException, ValueError) as exc:
            raise GatewayError(f"cannot fetch the site CA from {base_url}: {exc}") from None
        if not actual.startswith(wanted):
            raise GatewayError(
                f"the gateway at {base_url} presents a CA with fingerprint {actual[:16]}..., "
                f"not {wanted[:16]}...: wrong address, or someone in between. Not enrolling.",
                reason="fingerprint_mismatch",
            )
        return response.text

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
