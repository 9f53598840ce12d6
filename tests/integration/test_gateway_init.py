"""Issue 11, Seen 2: ``siteclock gateway init`` writes a setup that works as written, and a
gateway with a wrong broker host, port or password says so loudly and repeatedly (log,
``waiting_for()``, ``siteclock gateway check``) instead of "running" and then silence.

Real parts only: the broker is Mosquitto started on the files ``init`` wrote (as root it drops
to the ``mosquitto`` user those files are written for), the CIaO simulator is the project's.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from siteclock.config import load
from siteclock.gateway import init as gateway_init
from siteclock.gateway import selftest
from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.service import Gateway
from tests.support.mosquitto import MOSQUITTO, free_port, running_broker, wait_for_port
from tests.support.waiting import wait_until


@pytest.fixture
def site_dir() -> Iterator[Path]:
    # Not pytest's tmp_path (0700 parents): the broker's own user must reach its files.
    root = Path(tempfile.mkdtemp(prefix="siteclock-init-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_init_writes_a_setup_that_passes_its_self_test(
    site_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 2: config, broker (owned for the broker's user), PKI, CIaO simulator settings,
    and the next commands; the broker starts on it and the gateway's self-test passes."""
    mqtt_port, gateway_port = free_port(), free_port()
    with SimServer(port=free_port()) as sim:
        sim_port = int(sim.url.rsplit(":", 1)[1].split("/")[0])
        rc = gateway_init.cli([
            "--dir", str(site_dir / "etc"), "--data-dir", str(site_dir / "data"),
            "--hostname", "gw.example.invalid", "--mqtt-port", str(mqtt_port),
            "--gateway-port", str(gateway_port), "--ciao-sim", str(sim_port),
        ])  # fmt: skip
        out = capsys.readouterr().out
        assert rc == 0
        config = site_dir / "etc" / "gateway.toml"
        assert f"siteclock gateway --config {config}" in out
        assert "siteclock provision serve" in out
        cfg = load(config, GatewayConfig)  # loads as written
        assert cfg.ciao is not None
        assert cfg.ciao.base_url.endswith(f":{sim_port}")
        assert cfg.mqtt.share_group
        assert cfg.mqtt.port == gateway_port
        text = config.read_text()
        commented = [line for line in text.splitlines() if line.startswith("#")]
        assert len(commented) >= 10
        assert tomllib.loads(text)["gateway_keys_file"].endswith("gateway-keys.json")
        assert (site_dir / "etc" / "keys" / "gateway-keys.json").exists()
        # The gateway's unit runs as the service user, outside the broker's group: its CA copy
        # is public, the broker's pki/ is not.
        assert cfg.mqtt.ca_file == site_dir / "etc" / "ca.pem"
        assert cfg.mqtt.ca_file.stat().st_mode & 0o004
        env = (site_dir / "etc" / "enrolment.env").read_text()
        assert env.startswith('ENROLMENT_ARGS="--db ')
        assert env.split('"')[1] in out  # the unit runs what was printed
        assert oct((site_dir / "etc" / "keys" / "ciao-key.pem").stat().st_mode & 0o777) == "0o600"
        # ... and the simulator accepts the key init wrote for it.
        sim.register_client(
            gateway_init.SIM_CLIENT_ID, (site_dir / "etc" / "ciao-public.pem").read_bytes()
        )
        conf = site_dir / "etc" / "broker" / "mosquitto.conf"
        broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
        try:
            assert wait_for_port("127.0.0.1", gateway_port), broker.stderr
            healthy, lines = selftest.check(cfg)
            assert healthy, lines
            assert rc == 0
            # Run twice: refuses to overwrite the config, keeps everything.
            assert gateway_init.cli(["--dir", str(site_dir / "etc"), "--data-dir",
                                     str(site_dir / "data")]) == 2  # fmt: skip
            assert config.read_text() == text
        finally:
            broker.terminate()
            broker.wait(10)


def test_init_refuses_a_folder_the_broker_user_cannot_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen 1's cousin: under a 0700 folder the broker starts as root, then fails every reload."""
    if gateway_init.existing_user("mosquitto") is None:
        pytest.skip("needs root and a mosquitto user")
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    rc = gateway_init.cli(["--dir", str(hidden / "etc"), "--data-dir", str(hidden / "data")])
    assert rc == 2
    assert "cannot reach" in capsys.readouterr().err
    assert not (hidden / "etc").exists()  # nothing written


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[object]:
    with running_broker(tmp_path / "broker") as b:
        yield b


def gateway_cfg(tmp_path: Path, broker: object, **mqtt: object) -> GatewayConfig:
    from tests.support.mosquitto import gateway_config

    return GatewayConfig(
        db=tmp_path / "gateway.db",
        signing_key_file=tmp_path / "gateway-signing.key",
        inss_key_file=tmp_path / "inss.key",
        mqtt=gateway_config(broker, **mqtt),  # type: ignore[arg-type]
        wait_report_s=0.3,
    )


def loud_waits(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "gateway waiting for the broker"]


@pytest.mark.parametrize(
    ("wrong", "cause"),
    [
        ("port", "nothing answers at"),
        ("host", "cannot resolve the broker host"),
        ("password", "refuses the gateway's login"),
    ],
)
def test_a_gateway_that_cannot_reach_its_broker_says_why_again_and_again(
    tmp_path: Path, broker: object, caplog: pytest.LogCaptureFixture, wrong: str, cause: str
) -> None:
    """Seen 2: wrong broker host, port or password: WARNING lines with the cause and the next
    step, repeated while it lasts; ``waiting_for()`` and the self-test name it too."""
    cfg = gateway_cfg(tmp_path, broker)
    if wrong == "port":
        cfg = replace(cfg, mqtt=replace(cfg.mqtt, port=free_port()))
    elif wrong == "host":
        cfg = replace(cfg, mqtt=replace(cfg.mqtt, host="broker.invalid"))
    else:
        bad = tmp_path / "wrong.password"
        bad.write_text("not-the-password\n")
        os.chmod(bad, 0o600)
        cfg = replace(cfg, mqtt=replace(cfg.mqtt, password_file=bad))
    gateway = Gateway(cfg)
    with caplog.at_level(logging.INFO):
        gateway.start(wait_s=None)
        try:
            assert wait_until(lambda: len(loud_waits(caplog)) >= 3, 20), caplog.text
            assert any(cause in w for w in gateway.waiting_for())
        finally:
            gateway.stop()
    first = loud_waits(caplog)[0]
    assert cause in first.fields["cause"]  # type: ignore[attr-defined]
    assert first.fields["next"]  # type: ignore[attr-defined]
    healthy, lines = selftest.check(cfg, timeout_s=3.0)
    assert not healthy
    assert any(cause in line and "FAIL" in line for line in lines), lines


def test_the_wait_ends_loudly_when_the_broker_comes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.mosquitto import MosquittoBroker

    late = MosquittoBroker(tmp_path / "broker")  # configured, not started yet
    gateway = Gateway(gateway_cfg(tmp_path, late))
    with caplog.at_level(logging.INFO):
        gateway.start(wait_s=None)
        try:
            assert wait_until(lambda: gateway.waiting_for(), 20)
            late.start()
            assert wait_until(lambda: not gateway.waiting_for(), 20), caplog.text
        finally:
            gateway.stop()
            late.stop()
    assert "gateway waiting for the broker: over" in caplog.text
