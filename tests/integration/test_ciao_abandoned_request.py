"""A request the gateway gave up on never reaches CIaO later (gateway/ciao/abortive.py).

Two network namespaces joined by a link the test takes down: a keep-alive connection to a
recording HTTP server is open, the link goes down, a POST times out on the client and its
connection is closed, then the link comes back. With the default close the kernel goes on
retransmitting the closed socket's unsent request, which lands at the server after the link
returns: by then the relay has searched CIaO, found nothing and sent the event again, so the tap
is registered twice (seen in the soak). The session the CIaO client uses closes abortively: the
request is dropped and never arrives.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from siteclock.gateway.ciao.abortive import abortive_session
from tests.support.netns import Netns, impaired_link, unavailable
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

PORT = 8080


class RecordingServer:
    """Answers ``200`` to every HTTP/1.1 request and records each request line it received."""

    def __init__(self, host: str) -> None:
        self.received: list[str] = []
        self._listener = socket.create_server((host, PORT))
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) < length:
                        break
                    buffer = rest[length:]
                    self.received.append(head.split(b"\r\n")[0].decode())
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    except OSError:
                        return

    def close(self) -> None:
        self._stop = True
        self._listener.close()


@pytest.fixture
def network() -> Iterator[tuple[Netns, RecordingServer, object, str]]:
    with Netns.pair("abandon") as (gateway, ciao), impaired_link(gateway, ciao) as link:
        with ciao.entered():
            server = RecordingServer(link.right_ip)
        try:
            yield gateway, server, link, f"http://{link.right_ip}:{PORT}"
        finally:
            server.close()


def _abandon_a_post(
    make_session: Callable[[], requests.Session],
    network: tuple[Netns, RecordingServer, object, str],
) -> RecordingServer:
    gateway, server, link, url = network
    with gateway.entered():
        session = make_session()
        assert session.get(f"{url}/hello", timeout=5).status_code == 200  # keep-alive open
        link.down()  # type: ignore[attr-defined]
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.post(f"{url}/registrations", data=b"x" * 2000, timeout=(2, 1))
        session.close()
        link.up()  # type: ignore[attr-defined]
    return server


def test_a_plain_session_delivers_an_abandoned_post_after_the_link_returns(network) -> None:
    """The hazard itself, so this test shows the one below can fail."""
    server = _abandon_a_post(requests.Session, network)
    assert wait_until(lambda: "POST /registrations HTTP/1.1" in server.received, timeout=20)


def test_the_ciao_session_never_delivers_an_abandoned_post(network) -> None:
    server = _abandon_a_post(abortive_session, network)
    time.sleep(8.0)  # longer than the plain session's late delivery above (a few RTOs)
    assert server.received == ["GET /hello HTTP/1.1"]
