"""The enrolment service over real HTTPS for integration tests, with the test broker's PKI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from siteclock.provisioning.gateway.http import create_app, serve_tls
from siteclock.provisioning.gateway.service import EnrolmentService
from tests.support.mosquitto import MosquittoBroker


@contextmanager
def enrolment_server(
    service: EnrolmentService, broker: MosquittoBroker, ca_pem: str
) -> Iterator[str]:
    """Serve ``service`` on a free local port with the broker's server certificate, handing
    terminals ``ca_pem`` as the CA (a test may serve a forged one); yields the URL and stops
    the server on exit."""
    pki = broker.workdir / "pki"
    server = serve_tls(
        create_app(service, ca_pem=ca_pem), "127.0.0.1", 0, pki / "server.pem", pki / "server.key"
    )
    try:
        yield f"https://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
