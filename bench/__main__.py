"""``make bench``: run every benchmark, print its figures, write ``bench/results/NAME.json``.

A benchmark is a module ``bench/bench_<name>.py`` with ``def run() -> dict``; the dict holds the
figures (numbers, plus ``goal`` and ``goal_met`` where the issue sets a target). Name one or more
benchmarks to run only those: ``python -m bench tap_latency``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    names = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    wanted = argv or names
    unknown = set(wanted) - set(names)
    if unknown:
        print(f"unknown benchmarks: {', '.join(sorted(unknown))}; known: {', '.join(names)}")
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in wanted:
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            figures = module.run()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            print(f"   FAILED: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        figures = {
            "benchmark": name,
            **figures,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": {"python": platform.python_version(), "cpu": platform.machine()},
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for key, value in figures.items():
            if key not in ("benchmark", "machine"):
                print(f"   {key:28} {value}")
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
