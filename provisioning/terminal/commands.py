"""The terminal side's ``siteclock provision`` commands: run, rebind, rotate-key, label."""

from __future__ import annotations

import argparse

from siteclock.provisioning.shared.cli_args import binding_from_args, confirm, read_secret


def run(args: argparse.Namespace) -> int:
    from siteclock.provisioning.terminal.installer import Installer, ProvisionOptions
    from siteclock.provisioning.terminal.systemd import ServiceControl

    opts = ProvisionOptions(
        data_dir=args.data_dir,
        terminal_id=args.terminal_id,
        workplace=binding_from_args(args),
        gateway_url=args.gateway,
        token=read_secret(args, "token", "enrolment token"),
        reader_spec=args.reader,
        ca_fingerprint=args.ca_fingerprint,
        ca_file=args.ca_file,
        broker_host=args.broker_host,
        site_name=args.site_name,
        pin_factory=args.pin_factory,
        badge_timeout_s=args.badge_timeout,
        selftest=not args.no_selftest,
        skip_checks=frozenset(args.skip_check),
    )
    service = ServiceControl(enabled=not args.no_service)
    return Installer(opts, service=service).run()


def rebind_command(args: argparse.Namespace) -> int:
    from siteclock.provisioning.terminal.rebind import rebind
    from siteclock.provisioning.terminal.systemd import ServiceControl

    binding = binding_from_args(args)
    confirmed = args.yes or confirm(
        f"move this terminal to {binding.reference}", binding.reference
    )
    token = read_secret(args, "token", "enrolment token for the new workplace")
    return rebind(
        args.data_dir, workplace=binding, token=token, reason=args.reason,
        gateway_url=args.gateway, confirm=confirmed,
        service=ServiceControl(enabled=not args.no_service),
    )  # fmt: skip


def rotate(args: argparse.Namespace) -> int:
    from siteclock.provisioning.terminal.rotation import rotate_key
    from siteclock.provisioning.terminal.systemd import ServiceControl

    return rotate_key(
        args.data_dir, gateway_url=args.gateway, drain_timeout_s=args.drain_timeout,
        service=ServiceControl(enabled=not args.no_service),
    )  # fmt: skip


def label(args: argparse.Namespace) -> int:
    from siteclock.provisioning.terminal.label import LabelInfo, write_label
    from siteclock.terminal import config, identity

    cfg = config.load(args.data_dir / "terminal.toml")
    kid = identity.load(cfg.key_path).kid
    out = write_label(args.out or args.data_dir / "label.svg", LabelInfo(
        cfg.terminal_id, cfg.workplace, kid, args.site_name))  # fmt: skip
    print(f"label written: {out}")
    return 0
