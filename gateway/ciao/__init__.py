"""The gateway's side of the NSSO CIaO REST service: client, simulator and their contract.

* :mod:`~gateway.ciao.profile` + ``profile.toml`` - every unconfirmed detail of the contract;
* :mod:`~gateway.ciao.auth` - the JWT client assertion and the token cache;
* :mod:`~gateway.ciao.policy` - named tenacity retry policies;
* :mod:`~gateway.ciao.client` - :class:`CiaoClient` and its typed failures;
* :mod:`~gateway.ciao.environments` - local simulator, NSSO simulation, production;
* :mod:`~gateway.ciao.sim` - the local simulator (``siteclock ciao-sim``).

The simulator (Flask) is not imported here, so the client stays light.
"""

from __future__ import annotations

import logging

from siteclock.gateway.ciao.client import (
    Ambiguous,
    AuthError,
    BadResponse,
    CiaoClient,
    CiaoError,
    ItemResult,
    Permanent,
    Registration,
    ShuttingDown,
    Timeouts,
    Transient,
)
from siteclock.gateway.ciao.environments import CiaoConfig, Environment, EnvironmentName, resolve
from siteclock.gateway.ciao.policy import PolicyConfig
from siteclock.gateway.ciao.profile import Profile
from siteclock.gateway.ciao.profile import load as load_profile

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Ambiguous",
    "AuthError",
    "BadResponse",
    "CiaoClient",
    "CiaoConfig",
    "CiaoError",
    "Environment",
    "EnvironmentName",
    "ItemResult",
    "Permanent",
    "PolicyConfig",
    "Profile",
    "Registration",
    "ShuttingDown",
    "Timeouts",
    "Transient",
    "load_profile",
    "resolve",
]
