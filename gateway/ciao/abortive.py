"""HTTP connections to CIaO that are reset, never drained, when the gateway gives up on them.

A POST is *ambiguous* when the relay stops waiting for its answer (a read timeout, a dropped
link, the gateway killed): the relay then waits ``ambiguous_settle_s``, searches CIaO for the
registration and submits again only if it is not there (gateway/relay_reconcile.py). That is
exactly once only if nothing of the abandoned request can still reach CIaO after the search.

With the default close, it can: the kernel keeps a closed socket's unsent bytes and goes on
retransmitting them (and at process exit too), so on a lossy 4G link a request given up on can
land at CIaO many seconds later, after the search found nothing and the event was sent again:
one tap registered twice (the soak saw it). CIaO has no idempotency key to catch that.

``SO_LINGER`` on with a zero timeout makes every close *abortive*: the kernel drops what was
not yet delivered and sends a reset, also when the process dies. What CIaO already received
it processes at once, and the settle time covers that; nothing arrives later.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

ABORTIVE_CLOSE = (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
"""linger on, 0 s: close() discards unsent data and resets the connection."""


class AbortiveCloseAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections close abortively (see the module)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [*HTTPConnection.default_socket_options, ABORTIVE_CLOSE]
        super().init_poolmanager(*args, **kwargs)


def abortive_session() -> requests.Session:
    """A ``requests.Session`` whose HTTP and HTTPS connections close abortively."""
    session = requests.Session()
    adapter = AbortiveCloseAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
