"""Every written form of an INSS the parser accepts is masked in logs and reports; secrets are
never taken from the command line (issue 9, finding 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siteclock import log
from siteclock.gateway.identifiers import inss_check_digits, normalize_inss
from siteclock.gateway.registry import Registry
from siteclock.inss_shape import REDACTED, SEPARATORS
from siteclock.provisioning.cli import provision_cli, workers_cli
from siteclock.provisioning.gateway.workers import Workers, load_or_create_ref_key

INSS = "85073003328"
FORMS = [
    "85073003328",
    "85.07.30-033.28",
    "85-07-30-033-28",
    "85/07/30-033/28",
    "85 07 30 033 28",
    "85.07.30 033-28",
    "8507 3003 328",
]


def digits_left(text: str) -> str:
    """The digits of ``text`` once separators are gone: an INSS hides in there if unmasked."""
    return re.sub(f"[{SEPARATORS}]", "", text)


separator_runs = st.text(alphabet=" .-/\t", min_size=0, max_size=2)


@st.composite
def written_inss(draw: st.DrawFn) -> str:
    birth_and_serial = r"[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9])[0-9]{3}"
    first9 = draw(st.from_regex(birth_and_serial, fullmatch=True))
    digits = first9 + inss_check_digits(first9)
    seps = [draw(separator_runs) for _ in range(10)]
    return digits[0] + "".join(s + d for s, d in zip(seps, digits[1:], strict=True))


@settings(max_examples=300, deadline=None)
@given(written=written_inss(), before=st.sampled_from(["", "inss ", "x=", "(", "id:"]))
def test_redaction_masks_whatever_the_parser_accepts(written: str, before: str) -> None:
    digits = normalize_inss(written)
    masked = log.redact(f"{before}{written} end")
    assert REDACTED in masked
    assert digits not in digits_left(masked)


def test_the_import_report_never_prints_an_inss_from_another_column(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "gw.db", tmp_path / "inss.key")
    workers = Workers(registry, load_or_create_ref_key(tmp_path / "ref.key"))
    lines = ["inss,name,employer,capacity,badge,workplace"]
    for n, form in enumerate(FORMS):  # an INSS typed in the employer, badge, capacity columns
        lines.append(f"{INSS},Row {n},{form},employee,,")
        lines.append(f"{INSS},Row {n},0403574251,{form},,")
        lines.append(f"{INSS},Row {n},0403574251,employee,{form},")
        lines.append(f"{INSS},Row {n},0403574251,employee,,{form}")
    report = workers.import_csv("\n".join(lines) + "\n")
    text = report.text()
    assert len(report.rejected) >= 4 * len(FORMS) - 1
    assert INSS not in digits_left(text), text
    registry.close()


@pytest.mark.parametrize(
    ("cli", "argv"),
    [
        (provision_cli, ["run", "--terminal-id", "t-1", "--workplace", "1Y1003SQ5VSSZ",
                         "--gateway", "https://gw", "--token", "SECRET-TOKEN"]),
        (provision_cli, ["rebind", "--workplace", "1Y1003SQ5VSSZ", "--gateway", "https://gw",
                         "--reason", "moved", "--token", "SECRET-TOKEN"]),
        (workers_cli, ["--db", "x.db", "add", "--inss", INSS, "--name", "An", "--employer", "x"]),
    ],
)  # fmt: skip
def test_secrets_on_the_command_line_are_refused(cli, argv, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "not accepted on the command line" in err
    assert "SECRET-TOKEN" not in err
    assert INSS not in err


def test_the_token_is_read_from_the_environment_or_a_file(monkeypatch, tmp_path: Path) -> None:
    from siteclock.provisioning.cli import read_secret

    class Args:
        token_file = None

    monkeypatch.setenv("SITECLOCK_TOKEN", "FROM-ENV")
    assert read_secret(Args(), "token", "token") == "FROM-ENV"
    path = tmp_path / "token"
    path.write_text("FROM-FILE\n")
    Args.token_file = path
    assert read_secret(Args(), "token", "token") == "FROM-FILE"
