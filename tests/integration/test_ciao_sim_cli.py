"""Issue 11, Seen 5: ``siteclock ciao-sim`` can be told from the command line to reject a
worker, so a demo or an installer can see a rejection without writing Python."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from siteclock.gateway.ciao.sim import REMARK_DIMONA, parse_rejections
from tests.support.ciao import (
    CLIENT_ID,
    WORKPLACE,
    client_for,
    make_enterprise,
    make_inss,
    rsa_pair,
)
from tests.support.mosquitto import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def item(n: int) -> dict[str, object]:
    return {
        "registrationDate": "2025-01-15T07:00:00Z",
        "ssin": make_inss(n),
        "type": "in",
        "employer": {"enterpriseNumber": make_enterprise(1)},
        "placeOfWork": {"coordinates": {"latitude": 50.85, "longitude": 4.35}},
        "contractualRelationshipReference": WORKPLACE,
    }


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_reject_from_the_command_line(tmp_path: Path) -> None:
    """Seen 5: `--reject INSS=REASON` (and `--reject-file`) make those workers' registrations
    invalid with the remark the reason names; everyone else stays valid."""
    public = tmp_path / "client.pub.pem"
    public.write_bytes(rsa_pair()[1])
    rejects = tmp_path / "rejects.txt"
    rejects.write_text(f"# test workers\n{make_inss(3)}=NOT ON THE SITE LIST\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "siteclock.cli", "ciao-sim", "--port", str(port),
         "--client", f"{CLIENT_ID}={public}", "--validation-delay", "0.1",
         "--reject", f"{make_inss(2)}=dimona", "--reject-file", str(rejects)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: listening(port) or proc.poll() is not None, what="ciao-sim listening")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with client_for(f"http://127.0.0.1:{port}") as client:
            results = client.register([item(1), item(2), item(3)])

            def settled() -> list[object] | None:
                finals = [client.get(r.id) for r in results]
                return finals if all(f.validity != "pending" for f in finals) else None

            finals = wait_for(settled, what="validation")
        assert [(f.validity, f.remarks) for f in finals] == [
            ("valid", ()),
            ("invalid", (REMARK_DIMONA,)),
            ("invalid", ("NOT ON THE SITE LIST",)),
        ]
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_reject_spec_is_refused_without_repeating_the_number() -> None:
    with pytest.raises(ValueError, match="expected INSS=REASON"):
        parse_rejections([make_inss(1)])
    wrong = make_inss(1)[:-1] + str((int(make_inss(1)[-1]) + 1) % 10)
    with pytest.raises(ValueError, match="--reject #1") as info:
        parse_rejections([f"{wrong}=dimona"])
    assert wrong not in str(info.value)
    code = subprocess.run(
        [sys.executable, "-m", "siteclock.cli", "ciao-sim", "--reject", "123=x"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert code.returncode == 2
    assert "Traceback" not in code.stderr
    assert "--reject #1" in code.stderr
