"""The CIaO simulator's contract and faults, driven through the real client over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from siteclock.gateway.ciao.client import Ambiguous, CiaoClient, Permanent, Transient
from siteclock.gateway.ciao.sim import (
    REMARK_DIMONA,
    REMARK_DOW_UNKNOWN,
    REMARK_DUPLICATE,
    REMARK_EMPLOYER_NOT_ON_DOW,
    REMARK_INSS_UNKNOWN,
    SimServer,
)
from tests.support.ciao import (
    WORKPLACE,
    client_for,
    make_enterprise,
    make_inss,
    running_sim,
)

EMPLOYER = make_enterprise(1)


def item(n: int = 1, *, minute: int = 0, **changes: Any) -> dict[str, Any]:
    base = {
        "registrationDate": f"2025-01-15T07:{minute:02d}:00Z",
        "ssin": make_inss(n),
        "type": "in",
        "employer": {"enterpriseNumber": EMPLOYER},
        "placeOfWork": {"coordinates": {"latitude": 50.85, "longitude": 4.35}},
        "contractualRelationshipReference": WORKPLACE,
    }
    base.update(changes)
    return base


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.2) as server:
        yield server


@pytest.fixture
def client(sim: SimServer) -> Iterator[CiaoClient]:
    with client_for(sim.url, read_s=1.0) as c:
        yield c


def settle(sim: SimServer) -> None:
    time.sleep(sim.sim.state.validation_delay_s + 0.05)


def test_register_then_validation_turns_pending_into_valid(
    sim: SimServer, client: CiaoClient
) -> None:
    [result] = client.register([item()])
    assert result.created
    assert result.validity == "pending"
    assert result.remarks == ()
    assert client.get(result.id).validity == "pending"
    settle(sim)
    final = client.get(result.id)
    assert final.validity == "valid"
    assert final.remarks == ()
    assert [r["id"] for r in sim.registrations()] == [int(result.id)]


def test_schema_violations_are_problem_json_with_issues(sim: SimServer, client: CiaoClient) -> None:
    bad = [item(), item(2, type="BREAK"), dict(item(3), colour="red"), item(4, ssin="12")]
    with pytest.raises(Permanent) as info:
        client.register(bad)
    assert info.value.status == 400
    assert info.value.reason == "badRequest"
    names = {i["name"] for i in info.value.issues}
    assert names == {"items[1].type", "items[2].colour", "items[3].ssin"}
    assert info.value.item_indexes == [1, 2, 3]
    assert all(
        i["type"].startswith("urn:problem-type:belgif:input-validation:") for i in info.value.issues
    )
    assert not any("value" in i for i in info.value.issues if i["name"].endswith("ssin"))
    assert sim.registrations() == []  # a bad request registers nothing


def test_raw_problem_json_content_type(sim: SimServer, client: CiaoClient) -> None:
    token = client.tokens.get()
    resp = requests.post(
        sim.url + sim.profile.api_path("register"),
        json={"items": "nope"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.json()["type"] == "urn:problem-type:belgif:badRequest"


def test_batch_limit(sim: SimServer, client: CiaoClient) -> None:
    limit = sim.profile.contract.batch_limit
    token = client.tokens.get()
    url = sim.url + sim.profile.api_path("register")
    items = [item(1 + i % 900, minute=i % 60) for i in range(limit + 1)]
    resp = requests.post(
        url, json={"items": items}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert resp.status_code == 400
    assert sim.registrations() == []
    assert len(client.register(items[:limit])) == limit
    with pytest.raises(ValueError, match=r"1\.\.200"):
        client.register(items)


def test_business_refusals_are_not_created_items(sim: SimServer, client: CiaoClient) -> None:
    good = item()
    wrong_check = item(ssin=make_inss(7)[:9] + "00" if not make_inss(7).endswith("00") else "x")
    tomorrow = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    future = item(2, registrationDate=tomorrow)
    results = client.register([good, wrong_check, future])
    assert [r.created for r in results] == [True, False, False]
    assert "INVALID_SSIN" in results[1].reasons[0]
    assert "REGISTRATION_IN_FUTURE" in results[2].reasons[0]
    assert len(sim.registrations()) == 1


def test_validation_remarks_come_from_reference_data(sim: SimServer, client: CiaoClient) -> None:
    other_dow = "2Y1003SQ5VSSZ"
    sim.set_reference_data(
        dows={WORKPLACE: {EMPLOYER}, other_dow: {make_enterprise(9)}},
        known_ssins={make_inss(n) for n in (1, 2, 4, 5)},
        dimona_not_ok={(make_inss(5), EMPLOYER)},
    )
    results = client.register(
        [
            item(1),  # fine
            item(2, contractualRelationshipReference="3Y1003SQ5VSSZ"),  # DoW unknown
            item(4, contractualRelationshipReference=other_dow),  # employer not on that DoW
            item(3),  # INSS unknown
            item(1),  # duplicate of the first
            item(5),  # Dimona not OK
        ]
    )
    settle(sim)
    finals = [client.get(r.id) for r in results]
    assert finals[0].validity == "valid"
    assert finals[0].remarks == ()
    assert all(f.validity == "invalid" for f in finals[1:])
    assert [f.remarks for f in finals[1:]] == [
        (REMARK_DOW_UNKNOWN,),
        (REMARK_EMPLOYER_NOT_ON_DOW,),
        (REMARK_INSS_UNKNOWN,),
        (REMARK_DUPLICATE,),
        (REMARK_DIMONA,),
    ]


def test_search_by_worker_employer_workplace_and_period(sim: SimServer, client: CiaoClient) -> None:
    client.register([item(1, minute=m) for m in range(0, 30)] + [item(2, minute=5)])
    found = client.search(
        employer={"enterpriseNumber": EMPLOYER},
        workplace=WORKPLACE,
        date_from="2025-01-15T07:10:00Z",
        date_to="2025-01-15T07:19:00+00:00",
        ssin=make_inss(1),
    )
    assert sorted(f.registration_date for f in found) == [
        f"2025-01-15T07:{m}:00Z" for m in range(10, 20)
    ]
    everyone = client.search(
        employer={"enterpriseNumber": EMPLOYER},
        workplace=WORKPLACE,
        date_from="2025-01-15T07:00:00Z",
        date_to="2025-01-15T08:00:00Z",
    )
    assert len(everyone) == 31
    nobody = client.search(
        employer={"enterpriseNumber": make_enterprise(2)},
        workplace=WORKPLACE,
        date_from="2025-01-15T07:00:00Z",
        date_to="2025-01-15T08:00:00Z",
    )
    assert nobody == []


def test_search_pages(sim: SimServer, client: CiaoClient) -> None:
    client.register([item(1 + i, minute=i % 60) for i in range(120)])
    token = client.tokens.get()
    names = sim.profile.search
    params = {
        names.enterprise_number: EMPLOYER,
        names.workplace: WORKPLACE,
        names.date_from: "2025-01-15T00:00:00Z",
        names.date_to: "2025-01-16T00:00:00Z",
        names.page: 2,
        names.page_size: 50,
    }
    resp = requests.get(
        sim.url + sim.profile.api_path("search"),
        params=params,
        timeout=5,
        headers={"Authorization": f"Bearer {token}"},
    )
    body = resp.json()
    assert body["total"] == 120
    assert len(body["items"]) == 50
    assert body["items"][0]["id"] == sim.registrations()[50]["id"]


def test_429_carries_retry_after_and_the_client_honours_it(
    sim: SimServer, client: CiaoClient
) -> None:
    client.tokens.get()
    sim.set_faults(rate_limit_burst=2, retry_after_s=1)
    started = time.monotonic()
    [result] = client.register([item()])
    assert result.created
    assert time.monotonic() - started >= 2.0
    throttles = sim.throttles()
    assert len(throttles) == 2
    assert all(t.retry_at - t.issued_at == pytest.approx(1.0) for t in throttles)
    assert sim.retry_after_violations() == []
    assert client.stats["http.429"] == 2


def test_retry_after_check_catches_an_impatient_client(sim: SimServer, client: CiaoClient) -> None:
    token = client.tokens.get()
    sim.set_faults(rate_limit_burst=1, retry_after_s=5)
    url = sim.url + sim.profile.api_path("lookup", id=1)
    headers = {"Authorization": f"Bearer {token}"}
    first = requests.get(url, headers=headers, timeout=5)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "5"
    assert first.json()["retryAfterSec"] == 5
    requests.get(url, headers=headers, timeout=5)  # comes back at once: a violation
    assert len(sim.retry_after_violations()) == 1


def test_5xx_burst_on_post_is_ambiguous_on_get_is_retried(
    sim: SimServer, client: CiaoClient
) -> None:
    [created] = client.register([item()])
    sim.set_faults(error_burst=2, error_statuses=(500,))
    assert client.get(created.id).id == created.id  # two 500s retried, then found
    sim.set_faults(error_burst=1, error_statuses=(502,))
    with pytest.raises(Ambiguous):
        client.register([item(2)])
    sim.set_faults(error_burst=2, error_statuses=(503,))
    [again] = client.register([item(2)])  # 503 = not processed: retried in place
    assert again.created
    assert len(sim.registrations()) == 2


def test_dropped_connection_and_timeout_after_commit(sim: SimServer, client: CiaoClient) -> None:
    client.tokens.get()
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(Ambiguous) as info:
        client.register([item(1)])
    assert info.value.reason == "connection_dropped"
    assert sim.registrations() == []  # dropped before processing
    sim.set_faults(drop_rate=0.0, commit_then_hang_rate=1.0, hang_s=1.5)
    with pytest.raises(Ambiguous) as info:
        client.register([item(2)])
    assert info.value.reason == "read_timeout"
    assert len(sim.registrations()) == 1  # ... but this one was committed
    sim.set_faults(commit_then_hang_rate=0.0, commit_then_drop_rate=1.0)
    with pytest.raises(Ambiguous):
        client.register([item(3)])
    assert len(sim.registrations()) == 2


def test_latency_is_added(sim: SimServer, client: CiaoClient) -> None:
    client.tokens.get()
    sim.set_faults(latency_s=0.3)
    started = time.monotonic()
    client.register([item()])
    assert time.monotonic() - started >= 0.3


def test_unreachable_service_is_transient(client: CiaoClient, sim: SimServer) -> None:
    sim.stop()
    with pytest.raises(Transient) as info:
        client.get("1")
    assert info.value.reason == "connect_failed"
