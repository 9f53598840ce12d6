"""The SQLite backend of the gateway data layer: the core plus every group of operations."""

from __future__ import annotations

from siteclock.gateway.db.enrolment_ops import EnrolmentOps
from siteclock.gateway.db.inbox_ops import InboxOps
from siteclock.gateway.db.registry_ops import RegistryOps
from siteclock.gateway.db.terminal_ops import TerminalOps


class SQLiteGatewayDB(InboxOps, TerminalOps, RegistryOps, EnrolmentOps):
    """The gateway database in one SQLite file (see :class:`~.interface.GatewayDB`)."""
