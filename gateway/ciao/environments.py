"""Where the CIaO client sends its requests: the local simulator, the NSSO's simulation
environment, or production.

Production is never reached by accident: it needs ``environment = "production"`` *and*
``allow_production = true`` in the configuration, and a non-production environment refuses any
URL on the production host. Host names are from the NSSO's published configuration as seen in
third-party code (ciao-api.md section 1, confidence M); paths come from the profile.

Example (``gateway.toml``)::

    [ciao]
    environment = "local-sim"            # or "simulation", or "production"
    base_url = "http://127.0.0.1:8787"   # local-sim only
    client_id = "self_service_chaman_123_abc"
    private_key = "/etc/siteclock/ciao-key.pem"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from siteclock.config import ConfigError
from siteclock.gateway.ciao.profile import Profile
from siteclock.gateway.ciao.profile import load as load_profile

PRODUCTION_ROOT = "https://services.socialsecurity.be"
SIMULATION_ROOT = "https://services-sim.socialsecurity.be"
LOCAL_SIM_ROOT = "http://127.0.0.1:8787"
PRODUCTION_HOST = urlsplit(PRODUCTION_ROOT).hostname


class EnvironmentName(StrEnum):
    LOCAL_SIM = "local-sim"  # `siteclock ciao-sim`, tests, demo
    SIMULATION = "simulation"  # the NSSO's own simulation environment
    PRODUCTION = "production"


@dataclass(frozen=True)
class CiaoConfig:
    """The ``[ciao]`` table of the gateway's configuration."""

    client_id: str  # the OAuth2 client id the NSSO gave the employer (or the simulator knows)
    private_key: Path  # the PEM key that signs the client assertion (0600)
    environment: EnvironmentName = EnvironmentName.LOCAL_SIM  # where registrations go
    allow_production: bool = False  # must also be true to reach production: no accidents
    base_url: str = ""  # overrides the root URL of the API (required for nothing)
    token_url: str = ""  # overrides the token endpoint URL
    connect_timeout_s: float = 3.05  # seconds to open a connection to the service
    read_timeout_s: float = 10.0  # seconds to wait for an answer once the request is sent
    profile: Path | None = None  # a contract profile TOML (paths, enums); default: packaged


@dataclass(frozen=True)
class Environment:
    """Resolved endpoints of one environment."""

    name: EnvironmentName
    api_root: str
    token_url: str
    production: bool

    def url(self, path: str) -> str:
        return self.api_root.rstrip("/") + path


def resolve(config: CiaoConfig, *, source: str = "<config>") -> Environment:
    """Turn configuration into endpoints, refusing any accidental use of production."""
    profile: Profile = load_profile(config.profile)
    name = EnvironmentName(config.environment)
    if name is EnvironmentName.PRODUCTION:
        if not config.allow_production:
            raise ConfigError(
                source, "ciao.allow_production", "production needs allow_production = true"
            )
        root = config.base_url or PRODUCTION_ROOT
        token = config.token_url or PRODUCTION_ROOT + profile.paths.token
        require_https(root, token, source=source)
        return Environment(name, root, token, production=True)
    if name is EnvironmentName.SIMULATION:
        root = config.base_url or SIMULATION_ROOT
        # The NSSO's token server for simulation is the production one (ciao-api.md section 1):
        # that is the single production URL a non-production environment may use.
        token = config.token_url or PRODUCTION_ROOT + profile.paths.token
        require_https(root, token, source=source)
    else:
        root = config.base_url or LOCAL_SIM_ROOT
        token = config.token_url or root.rstrip("/") + profile.paths.token
    if urlsplit(root).hostname == PRODUCTION_HOST:
        raise ConfigError(
            source, "ciao.base_url", f"{name} must not point at the production API ({root})"
        )
    return Environment(name, root, token, production=False)


def require_https(root: str, token_url: str, *, source: str = "<config>") -> None:
    """Outside the local simulator every CIaO URL is https: the token request carries the
    signed client assertion and every registration names a worker; neither goes in clear."""
    for key, url in (("ciao.base_url", root), ("ciao.token_url", token_url)):
        if urlsplit(url).scheme != "https":
            raise ConfigError(source, key, f"{url!r} must be an https:// URL outside local-sim")


def for_local_sim(url: str, profile: Profile | None = None) -> Environment:
    """The environment of a simulator at ``url`` (tests, demo, bench)."""
    profile = profile or load_profile()
    root = url.rstrip("/")
    return Environment(EnvironmentName.LOCAL_SIM, root, root + profile.paths.token, False)
