"""The demo's wire tap: every event batch and status the terminals publish, kept as sent.

It connects with the gateway's broker identity (the only one the broker ACL lets read every
terminal's ``events`` and ``status``) under a client id of its own, so the gateway's session is
untouched, and appends each payload to ``demo-site/mqtt/capture.bin`` (topic line, then the
payload's bytes). The INSS scan of tests/integration/test_demo.py reads it: an INSS never
travels over MQTT. Acks and rosters are the gateway's to write and the terminals' to read; the
ACL gives this identity no read on them (the rosters' names and references are in the terminals'
feedback journals, which are scanned).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from siteclock.gateway.config import MqttConfig
from siteclock.gateway.link import make_client
from siteclock.protocol import TOPIC_ROOT


class WireTap:
    def __init__(self, cfg: MqttConfig, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self._file = out.open("ab")
        self._lock = threading.Lock()
        self.count = 0
        self.subscribed = threading.Event()
        self._client = make_client(cfg, manual_ack=False)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_args: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(cfg.host, cfg.port)
        self._client.loop_start()

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, _rc: Any, _props: Any) -> None:
        client.subscribe([(f"{TOPIC_ROOT}/+/events", 0), (f"{TOPIC_ROOT}/+/status", 0)])

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._lock:
            self._file.write(f"\n{message.topic} {len(message.payload)}\n".encode())
            self._file.write(message.payload)
            self._file.flush()
            self.count += 1

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
        with self._lock:
            self._file.close()
