"""The console's alerts: rules that raise each alert once and resolve it (:mod:`.rules`), their
delivery through Apprise (:mod:`.delivery`), and the loop that runs both with the terminals'
health sweeper (:mod:`.watch`). The alerts live in the gateway database (``alerts``,
migration 3). See docs/alerts.md.

The package itself imports nothing: the gateway's configuration reads :mod:`.config` without
loading Apprise or the relay.
"""
