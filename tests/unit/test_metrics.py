"""``/metrics``: its own bearer token (a 0600 file), the figures read from a real gateway
database, and no INSS, worker reference or badge anywhere in what it serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.metrics import MetricsEndpoint, load_or_create_token
from siteclock.gateway.terminal_health import HealthConfig, TerminalHealth
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.inss_shape import WRITTEN_INSS_RE
from tests.contract.test_gateway_db import SITE, T, event
from tests.unit.test_terminal_health import Clock, heartbeat

WORKER = "w-7f3a9c"
INSS = "85073003328"


@pytest.fixture
def world(tmp_path: Path):
    db = SQLiteGatewayDB(tmp_path / "gateway.db")
    clock = Clock()
    TerminalRegistry(db).register(T, SITE, public_key=b"\x01" * 32)
    TerminalRegistry(db).register("t-yard-02", SITE, public_key=b"\x02" * 32)
    health = TerminalHealth(db, HealthConfig(), clock_ns=clock)
    endpoint = MetricsEndpoint(db, tmp_path / "metrics.token", clock_ns=clock)
    token = (tmp_path / "metrics.token").read_text().strip()
    yield db, clock, health, endpoint, token
    db.close()


def scrape(endpoint: MetricsEndpoint, token: str) -> tuple[str, dict]:
    status, body, content_type = endpoint.answer(f"Bearer {token}")
    assert status == 200
    assert content_type.startswith("text/plain")
    text = body.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def test_metrics_need_their_own_token_from_a_0600_file(world, tmp_path: Path) -> None:
    _, _, _, endpoint, token = world
    assert (tmp_path / "metrics.token").stat().st_mode & 0o777 == 0o600
    assert len(token) >= 32
    for header in (None, "", f"Basic {token}", "Bearer wrong", f"Bearer {token}x"):
        status, body, _ = endpoint.answer(header)
        assert status == 401, header
        assert token.encode() not in body
    loose = tmp_path / "loose.token"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_token(loose)


def test_the_figures_come_from_the_gateway_database(world) -> None:
    db, clock, health, endpoint, token = world
    db.store_events([event(1, badge="nfc-a:DEADBEEF"), event(2), event(3)])
    db.take_new_events(clock.ns, full=True)
    db.set_registrations([
        ((T, 1), {"state": "registered", "worker_ref": WORKER, "submitted_ns": clock.ns + 3 * 10**9,
                  "created_ns": clock.ns}),
        ((T, 2), {"state": "rejected", "worker_ref": WORKER, "remarks": [f"INSS {INSS} unknown"],
                  "submitted_ns": clock.ns + 400 * 10**9, "created_ns": clock.ns}),
    ])  # fmt: skip
    health.on_status(T, heartbeat(queue_depth=4, oldest_unsent_age_s=75.0))
    for _ in range(2):
        health.on_refusal(T, "bad_signature")
    health.sweep()
    db.raise_alert(f"nsso_rejected:{T}:2", "nsso_rejected", T, "rejected", "/x", clock.ns)
    text, samples = scrape(endpoint, token)
    assert samples[("siteclock_events_stored_total", ())] == 3
    assert samples[("siteclock_events_received_total", ())] == 5
    assert samples[("siteclock_events_refused_total", (("reason", "bad_signature"),))] == 2
    assert samples[("siteclock_registrations", (("state", "rejected"),))] == 1
    assert samples[("siteclock_registrations_relayed_total", ())] == 2
    assert samples[("siteclock_registrations_rejected_total", ())] == 1
    assert samples[("siteclock_relay_latency_seconds_count", ())] == 2
    assert samples[("siteclock_relay_latency_seconds_bucket", (("le", "5.0"),))] == 1
    assert samples[("siteclock_relay_latency_seconds_sum", ())] == 403
    assert samples[("siteclock_terminals_online", ())] == 1
    assert samples[("siteclock_terminals", (("state", "never"),))] == 1
    labels = (("terminal", T), ("worksite", SITE))
    assert samples[("siteclock_terminal_backlog_events", labels)] == 4
    assert samples[("siteclock_terminal_backlog_oldest_seconds", labels)] == 75
    assert samples[("siteclock_alerts_open", (("kind", "nsso_rejected"),))] == 1
    # personal data never reaches a metric
    assert WORKER not in text
    assert "DEADBEEF" not in text
    assert not WRITTEN_INSS_RE.search(text)
    # the histogram counts each submission once across scrapes
    _, again = scrape(endpoint, token)
    assert again[("siteclock_relay_latency_seconds_count", ())] == 2


def test_the_sample_dashboard_asks_only_for_metrics_that_exist(world) -> None:
    """docs/grafana-dashboard.json stays true to the code: every ``siteclock_*`` name in its
    queries is one the collector serves (a renamed metric fails here, not in a site's Grafana)."""
    db, clock, health, endpoint, token = world
    health.on_status(T, heartbeat())
    db.raise_alert("k", "backlog", T, "m", "/x", clock.ns)
    text, _ = scrape(endpoint, token)
    served = {f.name for f in text_string_to_metric_families(text)}
    served |= {f"{n}_total" for n in served} | {f"{n}_bucket" for n in served}
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"siteclock_[a-z_]+", target["expr"])
    }
    assert asked
    assert asked <= served, asked - served
