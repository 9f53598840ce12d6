"""``siteclock tap --socket PATH BADGE...``: tap badges on a terminal's simulated reader.

A terminal whose ``[reader] spec`` is ``sim:PATH`` reads taps as lines on the Unix socket PATH
(:mod:`hw.sim`); this sends them from a shell, one line per badge (``04A1B2C3`` or
``nfc-a:04A1B2C3``), and prints the reader's reply to each: ``ok`` means the terminal got the
tap (its feedback and log say whether it saved it). ``--wait`` waits that many seconds for the
socket to appear (a terminal that is still starting).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from siteclock.hw.sim import send_taps


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siteclock tap", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="the sim: reader's socket")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it")
    parser.add_argument("badges", nargs="+", metavar="BADGE")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            replies = send_taps(str(args.socket), args.badges)
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                print(
                    f"siteclock tap: no simulated reader at {args.socket} ({exc.strerror or exc});"
                    ' is the terminal running with [reader] spec = "sim:<this path>"?',
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
    for badge, reply in zip(args.badges, replies, strict=False):
        print(f"{badge}: {reply}")
    return 0 if all(r == "ok" for r in replies) else 1
