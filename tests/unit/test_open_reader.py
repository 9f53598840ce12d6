from __future__ import annotations

import subprocess
import sys

import pytest

from siteclock import hw
from siteclock.hw import NfcReader, Rdm6300Reader, ReaderSpecError, SimReader, open_reader


@pytest.mark.parametrize(
    "spec",
    ["tty:AMA0:pn532", "tty:S0:pn532", "usb", "usb:054c:06c3", "udp:127.0.0.1:54321", "udp"],
)
def test_nfcpy_paths_open_an_nfc_reader(spec):
    reader = open_reader(spec, reopen_interval_s=5.0)
    assert isinstance(reader, NfcReader)
    assert reader.path == spec
    assert reader.name == spec
    assert reader.reopen_interval_s == 5.0


def test_pn532_on_any_serial_path():
    reader = open_reader("pn532:/dev/serial/by-id/usb-FTDI_FT232R-if00-port0")
    assert isinstance(reader, NfcReader)


def test_rdm6300():
    reader = open_reader("rdm6300:/dev/ttyS0", removal_s=0.8)
    assert isinstance(reader, Rdm6300Reader)
    assert reader.name == "rdm6300:/dev/ttyS0"
    assert reader.removal_s == 0.8


def test_sim(tmp_path):
    path = str(tmp_path / "taps.sock")
    reader = open_reader(f"sim:{path}")
    assert isinstance(reader, SimReader)
    assert reader.socket_path == path


@pytest.mark.parametrize(
    "spec", ["", "tty", "rdm6300:", "sim:", "serial:/dev/ttyS0", "/dev/ttyUSB0", "USB"]
)
def test_unknown_spec_is_a_value_error_naming_it(spec):
    with pytest.raises(ValueError, match=f"unknown reader spec {spec!r}") as caught:
        open_reader(spec)
    assert isinstance(caught.value, ReaderSpecError)
    assert "tty:AMA0:pn532" in str(caught.value)  # and says what would work


def test_opening_touches_no_device():
    open_reader("tty:AMA0:pn532").close()


def test_import_hw_does_not_import_nfcpy():
    code = "import sys; import siteclock.hw; print('nfc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert "NfcReader" in hw.__all__
