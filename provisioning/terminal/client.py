"""The client a terminal uses to reach the gateway's enrolment endpoint during provisioning."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import requests
from urllib3.exceptions import InsecureRequestWarning

from siteclock.provisioning.shared.ca import MAX_CA_BYTES, normalize_fingerprint, pinned_ca_pem
from siteclock.provisioning.shared.requests import (
    EnrolmentRequest,
    EnrolmentResult,
    KeyRequest,
    RebindRequest,
)


class GatewayError(Exception):
    """The gateway could not be reached, is not who it should be, or refused the request."""

    def __init__(self, message: str, *, reason: str = "unreachable") -> None:
        super().__init__(message)
        self.reason = reason


def unreachable(url: str, exc: BaseException, timeout_s: float) -> str:
    """Why ``url`` could not be reached, in words an installer can act on (the library's own
    text, ``HTTPSConnectionPool(host=..., port=...): Max retries exceeded ...``, is not)."""
    from urllib.parse import urlsplit

    where = urlsplit(url).netloc or url
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            f"the gateway at {where} does not prove it is the site's gateway (TLS: its "
            "certificate is not signed by the pinned site CA, or the address differs)"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return f"the gateway at {where} did not answer within {timeout_s:g} s (network, firewall?)"
    if "Name or service not known" in text or "nodename nor servname" in text or (
        "Temporary failure in name resolution" in text
    ):
        return f"the name in {where} does not resolve: check the --gateway address"
    if "refused" in text.lower():
        return (
            f"nothing answers at {where}: is the enrolment endpoint running "
            "('siteclock provision serve', or its service) and the port right?"
        )
    if "No route to host" in text or "unreachable" in text.lower():
        return f"no route to {where}: check the network cable/Wi-Fi and the address"
    return f"cannot reach the gateway at {where} ({type(exc).__name__})"


class GatewayClient:
    """What a terminal calls during provisioning. ``ca_file`` is the pinned site CA."""

    def __init__(self, base_url: str, ca_file: Path, *, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_file = Path(ca_file)
        self.timeout_s = timeout_s

    @staticmethod
    def fetch_ca(base_url: str, fingerprint: str, *, timeout_s: float = 15.0) -> str:
        """Download the site CA (unverified, once) and accept it only if it is exactly one
        certificate whose full SHA-256 is ``fingerprint``; returns that certificate alone."""
        try:
            wanted = normalize_fingerprint(fingerprint)
        except ValueError as exc:
            raise GatewayError(str(exc), reason="bad_fingerprint") from None
        try:
            # Unverified on purpose, once: trust comes from the fingerprint check below.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                response = requests.get(
                    base_url.rstrip("/") + "/v1/ca.pem", verify=False, timeout=timeout_s,
                    stream=True,
                )  # fmt: skip
            with response:
                response.raise_for_status()
                # Whoever answers is not trusted yet: read no more than a certificate needs.
                content = response.raw.read(MAX_CA_BYTES + 1, decode_content=True)
        except (requests.RequestException, OSError) as exc:
            raise GatewayError(
                f"cannot fetch the site CA: {unreachable(base_url, exc, timeout_s)}"
            ) from None
        try:
            if len(content) > MAX_CA_BYTES:
                raise ValueError(f"more than {MAX_CA_BYTES} bytes is not one certificate")
            return pinned_ca_pem(content, wanted)
        except ValueError as exc:
            raise GatewayError(
                f"the gateway at {base_url} does not present the pinned site CA ({exc}): wrong "
                "address, or someone in between. Not enrolling.",
                reason="fingerprint_mismatch",
            ) from None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = requests.post(
                self.base_url + path, json=body, verify=str(self.ca_file), timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise GatewayError(unreachable(self.base_url, exc, self.timeout_s)) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            raise GatewayError(
                f"the gateway refused: {payload.get('detail') or response.reason}",
                reason=str(payload.get("error", response.status_code)),
            )
        if not isinstance(payload, dict):
            raise GatewayError("the gateway's answer is not a JSON object", reason="malformed")
        return payload

    def broker(self) -> tuple[str, int] | None:
        """Where the gateway says terminals find the broker, checked against the pinned CA;
        None from a gateway too old to say (it answers 404)."""
        url = self.base_url + "/v1/broker"
        try:
            response = requests.get(url, verify=str(self.ca_file), timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise GatewayError(unreachable(self.base_url, exc, self.timeout_s)) from None
        if response.status_code == 404:
            return None
        try:
            payload = response.json()
            return str(payload["host"]), int(payload["port"])
        except (ValueError, KeyError, TypeError):
            raise GatewayError(
                f"the gateway's /v1/broker answer is not understood ({response.status_code})",
                reason="malformed",
            ) from None

    def enrol(self, req: EnrolmentRequest) -> EnrolmentResult:
        return EnrolmentResult.from_json(self._post("/v1/enrol", req.to_json()))

    def rebind(self, req: RebindRequest) -> EnrolmentResult:
        return EnrolmentResult.from_json(self._post("/v1/rebind", req.to_json()))

    def keys(self, req: KeyRequest) -> str:
        return str(self._post("/v1/keys", req.to_json())["kid"])
