"""Issue 11 from the employer's shell: the commands i11-prov owns, with real SQLite files.

Seen 7: no command makes a database (or a key) it was not asked to make. Seen 8: every error
a person can cause is a line or two, never a traceback. Seen 10: tokens shown with a local
date-time, listed and revoked; terminals listed; workers without a badge listed; unblock,
remove and move a crew without retyping anyone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from siteclock.cli import main
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.identifiers import enterprise_check_digits, inss_check_digits
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from siteclock.provisioning.shared.requests import TOKEN_ALPHABET

REPO = Path(__file__).resolve().parents[2]
WP, WP2 = "1Y1003SQ5VSSZ", "2A2004TR6WTTX"
ANA, BOB = (p + inss_check_digits(p) for p in ("850101123", "900215045"))
EMPLOYER = "04035742" + enterprise_check_digits("04035742")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``siteclock ARGV`` in-process: (exit code, stdout, stderr); an escaping exception fails
    the test (it would be a traceback for a person)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A gateway folder: an existing database and the key folder beside it."""
    SQLiteGatewayDB(tmp_path / "gateway.db").close()
    return tmp_path


def keys(site: Path) -> list[str]:
    folder = site / "keys"
    return ["--inss-key", str(folder / "inss.key"), "--ref-key", str(folder / "ref.key")]


def workers(capsys: pytest.CaptureFixture[str], site: Path, *argv: str) -> tuple[int, str, str]:
    return cli(capsys, "workers", "--db", str(site / "gateway.db"), *keys(site), *argv)


def test_a_typo_in_db_is_an_error_not_a_new_database(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 7: `--db` naming a missing file made a new, empty database."""
    typo = site / "gatway.db"
    for argv in (
        ["workers", "--db", str(typo), *keys(site), "list"],
        ["provision", "token", "create", "--db", str(typo), "--workplace", WP],
        ["provision", "token", "list", "--db", str(typo)],
        ["provision", "terminals", "list", "--db", str(typo)],
        ["provision", "locations", "--db", str(typo), "--workplace", WP],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 2, argv
        assert "no gateway database there" in err
        assert not typo.exists()
    code, _, err = cli(capsys, "provision", "token", "list", "--db", str(site / "no" / "gw.db"))
    assert code == 2
    assert f"the folder {site / 'no'} does not exist" in err


def test_an_existing_database_with_workers_never_gets_a_new_key(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen 7: a wrong --inss-key path would have made a second key (and twins on import)."""
    monkeypatch.setenv("SITECLOCK_INSS", ANA)
    assert workers(capsys, site, "add", "--name", "Ana", "--employer", EMPLOYER)[0] == 0
    wrong = site / "elsewhere" / "inss.key"
    code, _, err = cli(
        capsys, "workers", "--db", str(site / "gateway.db"), "--inss-key", str(wrong),
        "--ref-key", str(site / "keys" / "ref.key"), "list",
    )  # fmt: skip
    assert code == 2
    assert "already holds workers sealed with one" in err
    code, _, err = cli(
        capsys, "provision", "locations", "--db", str(site / "gateway.db"), "--workplace", WP,
        "--inss-key", str(wrong),
    )  # fmt: skip
    assert code == 2
    assert "already holds workers sealed with one" in err
    assert not wrong.exists()


def test_token_sheet_list_and_revoke(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Seen 10: expiry was a Unix time; tokens mixed I/O with 1/0; no list, no revoke."""
    db = str(site / "gateway.db")
    code, out, _ = cli(capsys, "provision", "token", "create", "--db", db, "--workplace", WP,
                       "--by", "An")  # fmt: skip
    assert code == 0
    token = re.search(r"enrolment token for \S+: (\S+)", out).group(1)  # type: ignore[union-attr]
    assert set(token.replace("-", "")) <= set(TOKEN_ALPHABET)
    assert not set(token) & set("IO10")
    day_time = r"\d{4}-\d\d-\d\d \d\d:\d\d"
    assert re.search(rf"valid until {day_time} \S+ \({day_time} UTC\)", out)

    code, out, _ = cli(capsys, "provision", "token", "list", "--db", db)
    assert code == 0
    [line] = out.splitlines()
    token_id = line.split()[0]
    assert f"{token_id}  {WP}  unused" in line
    assert "by An" in line
    assert token not in out  # the list never shows a token

    assert cli(capsys, "provision", "token", "revoke", "--db", db, token_id)[0] == 0
    assert " revoked " in cli(capsys, "provision", "token", "list", "--db", db)[1]
    code, _, err = cli(capsys, "provision", "token", "revoke", "--db", db, token_id)
    assert code == 2
    assert "only an unused one is revoked" in err
    from siteclock.provisioning.gateway.tokens import TokenStore
    from siteclock.provisioning.shared.requests import EnrolmentRefused

    with pytest.raises(EnrolmentRefused):  # a revoked token enrols nothing
        TokenStore(site / "gateway.db").check(token, terminal_id="t-1", kid="k", workplace=WP)


def test_tokens_are_typed_case_and_dash_insensitively(site: Path) -> None:
    from siteclock.provisioning.gateway.tokens import TokenStore

    store = TokenStore(site / "gateway.db")
    issued = store.create(WP, ttl_s=3600)
    typed = " ".join(issued.token.lower().split("-"))  # "abcd efgh ..." as read aloud
    assert store.info(typed) is not None


def test_terminals_list(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Seen 10: there was no list of terminals."""
    db = str(site / "gateway.db")
    assert cli(capsys, "provision", "terminals", "list", "--db", db)[1] == "no terminals enrolled\n"
    registry = TerminalRegistry(site / "gateway.db")
    kid = registry.register("t-hall-01", WP, public_key=Ed25519Signer.generate().public_key_bytes())
    registry.close()
    code, out, _ = cli(capsys, "provision", "terminals", "list", "--db", db)
    assert code == 0
    assert out.startswith(f"t-hall-01  {WP}  active  keys: {kid}  never heard from")


def test_workers_daily_commands(
    site: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Seen 10 and 7 from the shell: a ';' CSV, an unknown workplace refused (and not made),
    workers without a badge listed, unblock, a crew moved, a worker removed."""
    for place, coords in ((WP, "50,8503; 4,3517"), (WP2, "51.05, 3.72")):
        code, out, err = workers(capsys, site, "workplace", "--workplace", place,
                                 "--coordinates", coords)  # fmt: skip
        assert code == 0, err
    csv_file = tmp_path / "staff.csv"
    csv_file.write_text(
        "inss;name;employer;capacity;badge;workplace\n"
        f"{ANA};Ana Peeters;{EMPLOYER};employee;04A1B2C3;{WP}\n"
        f"{BOB};Bob Claes;{EMPLOYER};employee;;{WP}\n"
        f"{inss_first('610405310')};Carl Unknown;{EMPLOYER};employee;;3B3005US7XUUY\n"
    )
    code, out, _ = workers(capsys, site, "import", str(csv_file))
    assert code == 1
    assert "2 worker(s) imported, 1 row(s) rejected" in out
    assert "line 4: workplace: 3B3005US7XUUY is not known" in out
    code, out, _ = workers(capsys, site, "list", "--workplace", WP)
    assert code == 0
    assert "Bob Claes" in out
    assert "no badge" in out
    assert ANA not in out
    assert BOB not in out
    ana_ref = next(line.split("\t")[0] for line in out.splitlines() if "Ana" in line)

    assert workers(capsys, site, "block-badge", "04A1B2C3")[0] == 0
    assert "(blocked)" in workers(capsys, site, "list")[1]
    unblocked = workers(capsys, site, "unblock-badge", "04a1b2c3")[1]
    assert unblocked == "badge nfc-a:04A1B2C3 active again\n"

    code, out, _ = workers(capsys, site, "assign", "--from-workplace", WP, "--to-workplace", WP2)
    assert code == 0
    assert out.startswith(f"2 worker(s) moved to {WP2}")
    assert workers(capsys, site, "list", "--workplace", WP)[1] == f"no workers on {WP}\n"

    code, out, _ = workers(capsys, site, "remove", "--worker", ana_ref, "--yes")
    assert code == 0
    assert "Ana Peeters" not in workers(capsys, site, "list")[1]


def inss_first(first9: str) -> str:
    return first9 + inss_check_digits(first9)


BAD_INPUT = [
    # (argv, a phrase the one-line error must contain)
    (["workers", "--db", "{db}", "{keys}", "import", "{missing}"], "no such file"),
    (["workers", "--db", "{db}", "{keys}", "block-badge", "zz"], "is not a UID"),
    (["workers", "--db", "{db}", "{keys}", "unblock-badge", "04A1B2C3"], "not enrolled"),
    (["workers", "--db", "{db}", "{keys}", "remove", "--worker", "w-0", "--yes"], "unknown worker"),
    (["workers", "--db", "{db}", "{keys}", "assign", "--from-workplace", WP, "--to-workplace",
      WP2], "unknown workplace"),
    (["workers", "--db", "{db}", "{keys}", "link-badge", "--worker", "w-0", "--uid", "04A1"],
     "unknown worker"),
    (["workers", "--db", "{db}", "{keys}", "workplace", "--workplace", WP, "--coordinates",
      "50,85,4,35"], "decimal commas"),
    (["workers", "--db", "{db}", "{keys}", "list", "--workplace", "nope"], "DoW reference"),
    (["workers", "--db", "{nodir}", "list"], "does not exist"),
    (["provision", "token", "create", "--db", "{db}", "--workplace", "XX"], "Declaration"),
    (["provision", "token", "revoke", "--db", "{db}", "abcdef0123"], "no token with id"),
    (["provision", "terminals", "list", "--db", "{nodir}"], "does not exist"),
    (["provision", "locations", "--db", "{db}", "--workplace", "1Y1003SQ5VSSO"], "Declaration"),
    (["provision", "decommission", "--db", "{db}", "--broker-dir", "{tmp}/broker",
      "--broker-host", "localhost", "--terminal", "t-none", "--yes", "--inss-key",
      "{tmp}/keys/inss.key"], "not enrolled"),
    (["provision", "serve", "--db", "{nodir}", "--broker-dir", "{tmp}/broker",
      "--broker-host", "localhost"], "does not exist"),
    (["provision", "run", "--data-dir", "{tmp}/t", "--terminal-id", "t-1", "--workplace", WP,
      "--coordinates", "50.85, 4.35", "--gateway", "https://127.0.0.1:9", "--token-file",
      "{missing}"], "file not found"),
    (["provision", "run", "--data-dir", "{tmp}/t", "--terminal-id", "t-1", "--workplace", WP,
      "--coordinates", "4.35, 50.85", "--gateway", "https://127.0.0.1:9", "--token-file",
      "{db}"], "swapped"),
    (["provision", "run", "--data-dir", "{tmp}/t2", "--terminal-id", "t-2", "--workplace", WP,
      "--coordinates", "50.85, 4.35", "--gateway", "https://127.0.0.1:9", "--token-file",
      "{token}", "--ca-fingerprint", "ab" * 32, "--reader", "sim:{tmp}/t2.sock"],
     "nothing answers at 127.0.0.1:9"),
    (["provision", "rotate-key", "--data-dir", "{tmp}/nothing-here", "--gateway",
      "https://127.0.0.1:9", "--no-service"], "not found"),
    (["provision", "label", "--data-dir", "{tmp}/nothing-here"], "file not found"),
    (["ciao-sim", "--reject", "1=x"], "--reject #1"),
]  # fmt: skip


@pytest.mark.slow
def test_every_command_with_bad_input_says_one_thing_and_no_traceback(site: Path) -> None:
    """Seen 8: tracebacks or raw exceptions for a missing database folder, a missing CSV, a
    gateway that is down. Each owned command, run as a person would, with bad input."""
    values = {
        "{db}": str(site / "gateway.db"), "{nodir}": str(site / "no-such-dir" / "gw.db"),
        "{missing}": str(site / "missing.csv"), "{tmp}": str(site),
        "{token}": str(site / "token.txt"),
    }  # fmt: skip
    (site / "token.txt").write_text("ABCD-EFGH-JKLM-NPQR-STUV-WXYZ\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SITECLOCK_INSS": ""}
    failures = []
    for template, phrase in BAD_INPUT:
        argv: list[str] = []
        for part in template:
            if part == "{keys}":
                argv += keys(site)
                continue
            for name, value in values.items():
                part = part.replace(name, value)
            argv.append(part)
        done = subprocess.run(
            [sys.executable, "-m", "siteclock.cli", *argv], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        fine = (
            done.returncode in (1, 2)
            and "Traceback" not in done.stderr
            and phrase in done.stdout + done.stderr
            and len(done.stderr.strip().splitlines()) <= 3
        )
        if not fine:
            failures.append(f"siteclock {' '.join(argv)} -> {done.returncode}\n{done.stderr}")
    assert not failures, "\n".join(failures)
