"""The one ``siteclock`` command. Each role owns its subcommands; this module only routes.

Subcommands are imported lazily so that ``siteclock terminal`` on a Pi never imports the
gateway's web stack, and a missing optional library breaks only the command that needs it.
Each target is ``def cli(argv: list[str]) -> int``. Module names are relative to the
``siteclock`` package.
"""

from __future__ import annotations

import importlib
import sys

from siteclock import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("app.demo:cli", "run a whole simulated site end to end and show what happened"),
    "terminal": ("terminal.service:cli", "run a badge terminal"),
    "gateway": ("gateway.service:cli", "run the gateway: intake, relay to CIaO, verdicts"),
    "relay": ("gateway.relay_cli:cli", "employer: show relayed events, requeue fixed ones"),
    "ciao-sim": ("gateway.ciao.sim:cli", "run the local simulator of the NSSO CIaO service"),
    "broker-config": ("gateway.broker:cli", "write the Mosquitto configuration for a site"),
    "provision": ("provisioning.cli:provision_cli", "installer: bring a terminal live on a site"),
    "workers": ("provisioning.cli:workers_cli", "employer: enrol workers and badges"),
    "verify-chain": ("terminal.outbox:verify_cli", "verify a terminal's signed history offline"),
    "sequence-issues": ("gateway.sequence:cli", "employer: taps whose in/out sequence needs you"),
    "loadgen": ("app.loadgen:cli", "simulate thousands of terminals against a broker and gateway"),
    "migrate-db": ("gateway.db_migrate:cli", "copy the gateway database to PostgreSQL, verified"),
    "config-doc": ("app.config_doc:cli", "write docs/config.md (every config key) from the code"),
    "evidence": ("gateway.evidence.cli:cli", "export signed evidence, verify it offline"),
    "console": ("gateway.console.cli:cli", "employer's console: accounts, audit trail, serve"),
    "alerts": ("gateway.alerts.cli:cli", "employer: open alerts; test their delivery (Apprise)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"siteclock {__version__}", "", "usage: siteclock <command> [options]", ""]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "siteclock <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    target = COMMANDS.get(args[0])
    if target is None:
        print(f"siteclock: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = target[0].split(":")
    func = getattr(importlib.import_module(f"siteclock.{module_name}"), func_name)
    return int(func(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
