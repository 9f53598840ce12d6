"""The OAuth2 JWT client assertion against the simulator's strict token endpoint (real HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
import requests

from siteclock.gateway.ciao.auth import ASSERTION_TYPE, ClientAssertion
from siteclock.gateway.ciao.client import Permanent
from siteclock.gateway.ciao.sim import SimServer
from tests.support.ciao import CLIENT_ID, client_for, rsa_pair, running_sim


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with running_sim(validation_delay_s=0.1) as server:
        yield server


def token_url(sim: SimServer) -> str:
    return sim.url + sim.profile.paths.token


def post_assertion(sim: SimServer, assertion: str) -> requests.Response:
    return requests.post(
        token_url(sim),
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
        timeout=5,
    )


def assertion(sim: SimServer, key: bytes | None = None, **claims: object) -> str:
    return ClientAssertion(CLIENT_ID, key or rsa_pair()[0], token_url(sim)).build(**claims)


def test_valid_assertion_gets_a_bearer_token(sim: SimServer) -> None:
    resp = post_assertion(sim, assertion(sim))
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == sim.profile.contract.token_ttl_s
    # The token opens the API.
    lookup = requests.get(
        sim.url + sim.profile.api_path("lookup", id=1),
        timeout=5,
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert lookup.status_code == 404


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "https://services.socialsecurity.be/REST/oauth/v5/token"}, "aud"),
        ({"exp": int(time.time()) - 5}, "expired"),
        ({"sub": "someone_else"}, "sub"),
        ({"exp": int(time.time()) + 86400}, "too far ahead"),
    ],
)
def test_wrong_claims_are_refused(sim: SimServer, claims: dict[str, object], why: str) -> None:
    resp = post_assertion(sim, assertion(sim, **claims))
    assert resp.status_code == 401, why
    assert resp.json()["error"] == "invalid_client"


def test_missing_claim_is_refused(sim: SimServer) -> None:
    private = rsa_pair()[0]
    claims = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": token_url(sim),
        "exp": int(time.time()) + 60,
    }
    resp = post_assertion(sim, jwt.encode(claims, private, algorithm="RS256"))  # no jti
    assert resp.status_code == 401


def test_wrong_key_is_refused(sim: SimServer) -> None:
    other_private, _ = rsa_pair("intruder")
    resp = post_assertion(sim, assertion(sim, key=other_private))
    assert resp.status_code == 401
    assert "Signature" in resp.json()["error_description"]


def test_replayed_jti_is_refused(sim: SimServer) -> None:
    once = assertion(sim)
    assert post_assertion(sim, once).status_code == 200
    again = post_assertion(sim, once)
    assert again.status_code == 401
    assert "jti" in again.json()["error_description"]


def test_hmac_signed_assertion_is_refused(sim: SimServer) -> None:
    claims = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": token_url(sim),
        "jti": "x1",
        "exp": int(time.time()) + 60,
    }
    resp = post_assertion(
        sim, jwt.encode(claims, "a-shared-secret-of-32-bytes-long!", algorithm="HS256")
    )
    assert resp.status_code == 401


def test_unknown_client_and_wrong_grant_are_refused(sim: SimServer) -> None:
    assert post_assertion(sim, assertion(sim, iss="stranger", sub="stranger")).status_code == 401
    resp = requests.post(token_url(sim), data={"grant_type": "password"}, timeout=5)
    assert resp.status_code == 400


def test_api_refuses_missing_and_expired_tokens(sim: SimServer) -> None:
    url = sim.url + sim.profile.api_path("lookup", id=1)
    resp = requests.get(url, timeout=5)
    assert resp.status_code == 401
    assert resp.json()["type"].endswith("noAccessToken")
    token = post_assertion(sim, assertion(sim)).json()["access_token"]
    sim.expire_tokens()
    resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert resp.status_code == 401
    assert resp.json()["type"].endswith("expiredAccessToken")
    assert "invalid_token" in resp.headers["WWW-Authenticate"]


def test_client_renews_token_before_expiry_and_after_a_401(sim: SimServer) -> None:
    sim.set_faults(token_ttl_s=2)
    try:
        client = client_for(sim.url)
        with pytest.raises(Permanent) as info:
            client.get("1")
        assert info.value.reason == "resourceNotFound"
        assert client.tokens.fetches == 1
        time.sleep(1.6)  # past 2 s - min(60, 2/4) = 1.5 s: renewed before the server expires it
        with pytest.raises(Permanent) as info:
            client.get("1")
        assert info.value.reason == "resourceNotFound"
        assert client.tokens.fetches == 2
        assert client.stats["http.401"] == 0
        sim.expire_tokens()  # the server forgets it early: one 401, one renewal, then success
        with pytest.raises(Permanent) as info:
            client.get("1")
        assert info.value.reason == "resourceNotFound"
        assert client.stats["http.401"] == 1
        assert client.tokens.fetches == 3
    finally:
        sim.set_faults(token_ttl_s=None)
