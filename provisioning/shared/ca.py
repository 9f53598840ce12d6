"""The site CA as a terminal first meets it: exactly one certificate, pinned by its fingerprint."""

from __future__ import annotations

import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

MAX_CA_BYTES = 16 * 1024


FINGERPRINT_HEX = 64
"""A CA pin is the whole SHA-256 (256 bits): a prefix is a second-preimage target, not a pin."""


_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?"
)


def single_certificate(ca_pem: str | bytes) -> x509.Certificate:
    """The one certificate in ``ca_pem``; ValueError if there is not exactly one, or anything
    else besides it (a second certificate after the pinned one would be trusted too)."""
    data = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
    data = data.strip(b" \t\r\n") + b"\n"
    if not _PEM_CERT.fullmatch(data):
        raise ValueError("the CA file must hold exactly one PEM certificate and nothing else")
    return x509.load_pem_x509_certificate(data)


def ca_fingerprint(ca_pem: str | bytes) -> str:
    """SHA-256 of the CA certificate's DER bytes, lower-case hex (what ``token create`` prints).
    Refuses a file that is not exactly one certificate."""
    cert = single_certificate(ca_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def single_ca_pem(ca_pem: str | bytes) -> str:
    """The one certificate in ``ca_pem``, re-encoded as PEM (ValueError unless exactly one)."""
    return single_certificate(ca_pem).public_bytes(serialization.Encoding.PEM).decode()


def pinned_ca_pem(ca_pem: str | bytes, fingerprint: str) -> str:
    """The certificate to trust, re-encoded from what was checked (so what is saved is exactly
    what was pinned), or ValueError if ``fingerprint`` is not its full SHA-256."""
    wanted = normalize_fingerprint(fingerprint)
    cert = single_certificate(ca_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    actual = hashlib.sha256(der).hexdigest()
    if actual != wanted:
        raise ValueError(f"CA fingerprint {actual[:16]}... is not the pinned {wanted[:16]}...")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def normalize_fingerprint(fingerprint: str) -> str:
    """64 lower-case hex digits (colons and spaces ignored), or ValueError."""
    wanted = fingerprint.replace(":", "").replace(" ", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise ValueError(
            f"a CA fingerprint is the full SHA-256: {FINGERPRINT_HEX} hex digits (it is printed "
            "next to the enrolment token), not a prefix"
        )
    return wanted
