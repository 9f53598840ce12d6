"""A process that stores signed events in the gateway database the way the intake does, and
says on stdout which ones it acknowledged, for tests that cut the power under the gateway.

``python -m tests.support.intake_writer '<json>'`` with keys db, terminal, badges, start_ns,
offset, batch. Event ``i`` (counted from ``offset``) is at ``start_ns + i`` seconds, each badge
cycling in, break, back, out. Each batch goes through the data layer's ``store_events`` (the
intake's own call: one transaction, committed with a full sync); only after it returns is a line
``{"terminal": ..., "seqs": [...]}`` printed, the moment the intake would ack "stored" to the
terminal. Runs until killed.
"""

from __future__ import annotations

import json
import sys
import time

from tests.support.ciao import WORKPLACE
from tests.support.inbox import CYCLE, TerminalFeed, insert


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    feed = TerminalFeed(args["terminal"], WORKPLACE)
    badges, batch, start = args["badges"], int(args["batch"]), int(args["start_ns"])
    i = int(args["offset"])
    while True:
        events = []
        for _ in range(batch):
            kind = CYCLE[(i // len(badges)) % len(CYCLE)]
            events.append(feed.event(kind, badges[i % len(badges)], start + i * 10**9))
            i += 1
        insert(args["db"], events)
        print(json.dumps({"terminal": feed.terminal_id,
                          "seqs": [e.event.seq for e in events]}), flush=True)  # fmt: skip
        time.sleep(0.005)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
