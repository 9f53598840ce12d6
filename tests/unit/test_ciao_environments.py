"""Simulation and production are separate, and production is never used by accident."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteclock.config import ConfigError, from_mapping
from siteclock.gateway.ciao.environments import (
    PRODUCTION_ROOT,
    SIMULATION_ROOT,
    CiaoConfig,
    EnvironmentName,
    resolve,
)

KEY = Path("/etc/siteclock/ciao.pem")


def test_default_is_the_local_simulator() -> None:
    env = resolve(CiaoConfig(client_id="c", private_key=KEY))
    assert env.name is EnvironmentName.LOCAL_SIM
    assert env.api_root == "http://127.0.0.1:8787"
    assert env.token_url == "http://127.0.0.1:8787/REST/oauth/v5/token"
    assert not env.production


def test_production_needs_explicit_permission() -> None:
    with pytest.raises(ConfigError, match="allow_production"):
        resolve(CiaoConfig(client_id="c", private_key=KEY, environment=EnvironmentName.PRODUCTION))
    env = resolve(
        CiaoConfig(
            client_id="c",
            private_key=KEY,
            environment=EnvironmentName.PRODUCTION,
            allow_production=True,
        )
    )
    assert env.production
    assert env.api_root == PRODUCTION_ROOT


def test_nsso_simulation_uses_sim_api_and_the_production_token_server() -> None:
    env = resolve(
        CiaoConfig(client_id="c", private_key=KEY, environment=EnvironmentName.SIMULATION)
    )
    assert env.api_root == SIMULATION_ROOT
    assert env.token_url == PRODUCTION_ROOT + "/REST/oauth/v5/token"
    assert not env.production


def test_a_non_production_environment_refuses_the_production_host() -> None:
    for name in (EnvironmentName.SIMULATION, EnvironmentName.LOCAL_SIM):
        with pytest.raises(ConfigError, match="production"):
            resolve(
                CiaoConfig(
                    client_id="c", private_key=KEY, environment=name, base_url=PRODUCTION_ROOT
                )
            )


def test_config_table_loads_with_typed_errors() -> None:
    cfg = from_mapping(
        {"client_id": "c", "private_key": "/k.pem", "environment": "simulation"}, CiaoConfig
    )
    assert cfg.environment is EnvironmentName.SIMULATION
    with pytest.raises(ConfigError, match="environment"):
        from_mapping({"client_id": "c", "private_key": "/k", "environment": "prod"}, CiaoConfig)


@pytest.mark.parametrize("environment", [EnvironmentName.SIMULATION, EnvironmentName.PRODUCTION])
@pytest.mark.parametrize("field", ["base_url", "token_url"])
def test_urls_outside_the_local_simulator_must_be_https(
    environment: EnvironmentName, field: str
) -> None:
    config = CiaoConfig(
        client_id="c", private_key=KEY, environment=environment, allow_production=True,
        **{field: "http://ciao.example.be/REST"},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="https"):
        resolve(config)
