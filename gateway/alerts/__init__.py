"""The console's alerts: rules that raise each alert once and resolve it (:mod:`.rules`), their
delivery through Apprise (:mod:`.delivery`), and the loop that runs both with the terminals'
health sweeper (:mod:`.watch`). The alerts live in the gateway database (``alerts``,
migration 3). See docs/alerts.md.
"""

from siteclock.gateway.alerts.config import AlertConfig
from siteclock.gateway.alerts.delivery import AlertDelivery, AppriseChannel
from siteclock.gateway.alerts.rules import KINDS, AlertRules, resolve_by_person
from siteclock.gateway.alerts.watch import HealthWatch

__all__ = [
    "KINDS",
    "AlertConfig",
    "AlertDelivery",
    "AlertRules",
    "AppriseChannel",
    "HealthWatch",
    "resolve_by_person",
]
