"""MQTT topics: one tree per terminal, one channel per kind of message."""

from __future__ import annotations

from enum import StrEnum

from siteclock.protocol.limits import MalformedMessage, check_terminal_id

# --------------------------------------------------------------------------- topics


TOPIC_ROOT = "siteclock/v1"


class Channel(StrEnum):
    """The four topics of a terminal; the broker ACL lets it use only its own."""

    EVENTS = "events"  # terminal -> gateway, QoS 1, never retained
    STATUS = "status"  # terminal -> anyone, retained JSON, also the Last Will
    ACK = "ack"  # gateway -> terminal, QoS 1
    CONFIG = "config"  # gateway -> terminal, retained signed roster


def topic(terminal_id: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{check_terminal_id(terminal_id)}/{channel}"


def subscription(channel: Channel, *, share_group: str | None = None) -> str:
    """The gateway's filter for one channel of every terminal, shared when a group is given."""
    flt = f"{TOPIC_ROOT}/+/{channel}"
    return f"$share/{share_group}/{flt}" if share_group else flt


def parse_topic(value: str) -> tuple[str, Channel]:
    """``siteclock/v1/<terminal>/<channel>`` -> (terminal id, channel)."""
    parts = value.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise MalformedMessage(f"topic {value!r} is not {TOPIC_ROOT}/<terminal>/<channel>")
    try:
        channel = Channel(parts[3])
    except ValueError:
        raise MalformedMessage(f"topic {value!r} names no known channel") from None
    return check_terminal_id(parts[2]), channel
