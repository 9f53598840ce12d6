"""The SQLite backend of the gateway data layer: the core plus every group of operations."""

from __future__ import annotations

from siteclock.gateway.db.alert_ops import AlertOps
from siteclock.gateway.db.console_ops import ConsoleOps
from siteclock.gateway.db.core import SQLiteCore
from siteclock.gateway.db.enrolment_ops import EnrolmentOps
from siteclock.gateway.db.evidence_ops import EvidenceOps
from siteclock.gateway.db.health_ops import HealthOps
from siteclock.gateway.db.inbox_ops import InboxOps
from siteclock.gateway.db.reads import ReadOps
from siteclock.gateway.db.registry_ops import RegistryOps
from siteclock.gateway.db.relay_admin_ops import RelayAdminOps
from siteclock.gateway.db.relay_ops import RelayOps
from siteclock.gateway.db.report_ops import ReportOps
from siteclock.gateway.db.sequence_ops import SequenceOps
from siteclock.gateway.db.terminal_ops import TerminalOps


class SQLiteGatewayDB(
    InboxOps,
    RelayOps,
    RelayAdminOps,
    TerminalOps,
    RegistryOps,
    SequenceOps,
    EnrolmentOps,
    ReadOps,
    HealthOps,
    AlertOps,
    ConsoleOps,
    EvidenceOps,
    ReportOps,
    SQLiteCore,
):
    """The gateway database in one SQLite file (see :class:`~.interface.GatewayDB`)."""
