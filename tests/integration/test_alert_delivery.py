"""Alerts sent through Apprise to a real local HTTP endpoint (``json://127.0.0.1:PORT/...``):
raised and resolved news, kept and retried when the endpoint fails, a storm summarised, and a
URLs file readable by others refused. No mocks: Apprise posts over a real socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from siteclock.files import write_secret
from siteclock.gateway.alerts.config import AlertConfig, UrlsFileError, read_urls
from siteclock.gateway.alerts.delivery import AlertDelivery, AppriseChannel
from siteclock.gateway.db import SQLiteGatewayDB
from tests.unit.test_terminal_health import Clock


class Hook:
    """A webhook receiver: keeps every JSON body posted; answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if hook.status == 200:
                    hook.received.append({"path": self.path, **body})
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def world(tmp_path: Path, hook: Hook):
    urls = tmp_path / "alert-urls"
    write_secret(urls, f"# the site's webhook\njson://127.0.0.1:{hook.port}/siteclock\n".encode())
    cfg = AlertConfig(urls_file=urls, console_url="https://console.example", storm=3, retry_s=10)
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    clock = Clock()
    delivery = AlertDelivery(db, AppriseChannel(cfg.urls, timeout_s=5), cfg, clock_ns=clock)
    yield db, clock, delivery
    db.close()


def raise_offline(db, clock, terminal: str) -> None:
    db.raise_alert(
        f"terminal_offline:{terminal}", "terminal_offline", terminal,
        f"Terminal {terminal} is offline", f"https://console.example/terminals/{terminal}",
        clock.ns,
    )  # fmt: skip


def test_an_alert_and_its_resolution_each_go_out_once(world, hook: Hook) -> None:
    db, clock, delivery = world
    raise_offline(db, clock, "t-hall-01")
    assert delivery.deliver() == 1
    assert delivery.deliver() == 0  # sent: not again
    (first,) = hook.received
    assert first["path"] == "/siteclock"
    assert first["title"] == "siteclock alert: terminal offline (t-hall-01)"
    assert "Terminal t-hall-01 is offline" in first["message"]
    assert "https://console.example/terminals/t-hall-01" in first["message"]
    db.resolve_alert("terminal_offline:t-hall-01", "back online at 12:00Z", clock.ns, by="")
    assert delivery.deliver() == 1
    assert delivery.deliver() == 0
    second = hook.received[1]
    assert second["title"] == "Resolved: terminal offline"
    assert "back online at 12:00Z" in second["message"]
    assert second["type"] == "success"


def test_a_failing_endpoint_keeps_the_alert_and_it_goes_out_after_the_backoff(world, hook: Hook):
    db, clock, delivery = world
    hook.status = 500
    raise_offline(db, clock, "t-hall-01")
    assert delivery.deliver() == 0
    row = db.alerts_list()[0]
    assert row["sent_ns"] is None
    assert row["send_attempts"] == 1
    assert "refused or did not answer" in row["send_error"]
    hook.status = 200
    assert delivery.deliver() == 0  # within its backoff: not tried
    clock.advance(11)
    assert delivery.deliver() == 1
    assert len(hook.received) == 1
    assert db.alerts_list()[0]["send_error"] == ""


def test_a_storm_of_one_kind_goes_out_as_one_summary(world, hook: Hook) -> None:
    db, clock, delivery = world
    for i in range(5):
        raise_offline(db, clock, f"t-{i:02d}")
    db.raise_alert("reader_fault:t-09", "reader_fault", "t-09", "reader fault", "x", clock.ns)
    assert delivery.deliver() == 6
    titles = sorted(m["title"] for m in hook.received)
    assert titles == [
        "siteclock alert: reader fault (t-09)",
        "siteclock: 5 terminal offline alerts raised",
    ]
    summary = next(m for m in hook.received if m["title"].startswith("siteclock: 5"))
    assert "t-00, t-01, t-02, t-03, t-04" in summary["message"]
    assert "https://console.example/alerts" in summary["message"]


def test_a_urls_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    urls = tmp_path / "alert-urls"
    urls.write_text("json://127.0.0.1:9/x\n")
    urls.chmod(0o644)
    with pytest.raises(UrlsFileError, match="chmod 600"):
        read_urls(urls)


def test_siteclock_alerts_test_and_list(tmp_path: Path, hook: Hook, capsys) -> None:
    from siteclock.gateway.alerts.cli import cli

    urls = tmp_path / "alert-urls"
    write_secret(urls, f"json://127.0.0.1:{hook.port}/siteclock\n".encode())
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'db = "{tmp_path / "gateway.db"}"\nsigning_key_file = "{tmp_path / "k"}"\n'
        f'[alerts]\nurls_file = "{urls}"\nconsole_url = "https://console.example"\n'
    )
    assert cli(["test", "--config", str(config)]) == 0
    assert hook.received[0]["title"] == "siteclock alert test"
    assert "https://console.example/alerts/" in hook.received[0]["message"]
    hook.status = 500
    assert cli(["test", "--config", str(config)]) == 1
    assert "not sent" in capsys.readouterr().err
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    raise_offline(db, Clock(), "t-hall-01")
    db.close()
    assert cli(["list", "--config", str(config)]) == 0
    assert "Terminal t-hall-01 is offline" in capsys.readouterr().out
