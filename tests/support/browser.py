"""A real headless Chromium (Debian's ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``,
driven by Selenium) and a real gateway stack with its console, for the browser tests.

:func:`chromium` starts the browser on a new empty profile, with the background services that
would phone home switched off; the site's certificate is signed by the site's own CA, which
the browser does not know, so certificate errors are accepted (the TLS itself is real).
:func:`console_stack` runs what a site runs: a real Mosquitto with the site's TLS, passwords and
ACL (:mod:`tests.support.mosquitto`), the CIaO simulator over HTTP, and a
:class:`gateway.service.Gateway` whose ``[console]`` is served over HTTPS on cheroot with the
broker's certificate. Terminals come from :mod:`tests.support.site_terminals`.

Example (one stack and one browser per test module: starting them is most of the time)::

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory):
        with console_stack(tmp_path_factory.mktemp("site"), terminals=["t-lobby"]) as s:
            s.add_user("admin", role="admin")
            yield s

    def test_login(stack, browser):
        log_in(browser, stack.url, "admin")
        save_screenshot(browser, "registrations")
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from siteclock.gateway.ciao.sim import SimServer
from siteclock.gateway.config import GatewayConfig
from siteclock.gateway.console.accounts import Accounts
from siteclock.gateway.console.config import ConsoleConfig
from siteclock.gateway.db import SQLiteGatewayDB
from siteclock.gateway.registry import Registry
from siteclock.gateway.service import Gateway
from siteclock.gateway.terminals import TerminalRegistry
from siteclock.keys import Ed25519Signer
from tests.support.ciao import running_sim
from tests.support.mosquitto import MosquittoBroker, running_broker
from tests.support.site_terminals import Terminal, at, site_gateway_config
from tests.support.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "artifacts" / "screenshots"
PASSWORD = "site-password-1234"
"""Every test account's password (the tests are about what an account may do, not its secret)."""
PHONE = (390, 844)
DESK = (1280, 900)


@contextmanager
def chromium(*, phone: bool = False) -> Iterator[WebDriver]:
    """A headless Chromium on a new, empty profile; quit (and the profile removed) on exit.
    ``phone``: a phone's screen (``PHONE`` CSS pixels, touch, a mobile user agent) through
    Chromium's device emulation: a headless window cannot be made narrower than 500 px."""
    size = PHONE if phone else DESK
    profile = Path(tempfile.mkdtemp(prefix="siteclock-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-first-run",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
    ):  # fmt: skip
        options.add_argument(argument)
    if phone:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 2.0},
        })  # fmt: skip
    options.accept_insecure_certs = True  # the site's own CA signs the console's certificate
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class ConsoleStack:
    """A running site: broker, simulator, gateway (with relay and console), its registry."""

    root: Path
    broker: MosquittoBroker
    sim: SimServer
    cfg: GatewayConfig
    gateway: Gateway
    registry: Registry
    terminal_registry: TerminalRegistry
    terminals: dict[str, Terminal] = field(default_factory=dict)
    clock: list[int] = field(default_factory=lambda: [at("07:00")])

    @property
    def url(self) -> str:
        assert self.gateway.console is not None
        return self.gateway.console.url

    @property
    def db(self) -> Path:
        return self.cfg.db

    def add_user(self, username: str, *, role: str, worksites: Iterable[str] = ()) -> None:
        db = SQLiteGatewayDB(self.cfg.db)
        try:
            Accounts(db).add(username, PASSWORD, role=role, worksites=worksites, language="en")
        finally:
            db.close()

    def add_terminal(self, terminal_id: str, workplace: str) -> Terminal:
        """A terminal registered at the gateway, with broker credentials, online."""
        self.broker.add_terminal(terminal_id)
        signer = Ed25519Signer.generate()
        self.terminal_registry.register(terminal_id, workplace,
                                        public_key=signer.public_key_bytes())  # fmt: skip
        assert self.cfg.gateway_keys_file is not None
        terminal = Terminal(terminal_id, self.root / f"{terminal_id}.db", signer, workplace,
                            self.clock, self.broker, self.cfg.gateway_keys_file)  # fmt: skip
        self.terminals[terminal_id] = terminal
        terminal.online()
        wait_for(lambda: terminal.rosters, f"{terminal_id}'s first roster")
        return terminal


@contextmanager
def console_stack(root: Path, **sim_options: object) -> Iterator[ConsoleStack]:
    """A site with its console on a free port, stopped (every part) on exit."""
    options = {"validation_delay_s": 0.05, **sim_options}
    with running_sim(**options) as sim, running_broker(root / "broker") as broker:
        pki = broker.workdir / "pki"
        base = site_gateway_config(root, broker, sim)
        cfg = dataclasses.replace(base, console=ConsoleConfig(
            host="127.0.0.1", port=0, cert_file=pki / "server.pem", key_file=pki / "server.key",
            default_language="en",
        ))  # fmt: skip
        registry = Registry(cfg.db, cfg.inss_key_path)
        terminal_registry = TerminalRegistry(cfg.db)
        gateway = Gateway(cfg)
        gateway.start(wait_s=10.0)
        stack = ConsoleStack(root, broker, sim, cfg, gateway, registry, terminal_registry)
        try:
            yield stack
        finally:
            for terminal in stack.terminals.values():
                terminal.close()
            gateway.stop()
            terminal_registry.close()
            registry.close()


# --------------------------------------------------------------------------- page helpers


def log_in(driver: WebDriver, url: str, username: str, password: str = PASSWORD) -> None:
    """Fill the login form as a person would and send it."""
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    submit(driver, "login")


def log_out(driver: WebDriver) -> None:
    submit(driver, "logout")


def submit(driver: WebDriver, button_id: str) -> None:
    """Click a form's button and wait until the answer's page has replaced this one (a mark
    left on this page's ``window`` is gone from the next)."""
    driver.execute_script("window.siteclockOldPage = true")
    driver.find_element(By.ID, button_id).click()
    WebDriverWait(driver, 10).until(
        lambda d: (
            d.execute_script("return window.siteclockOldPage === undefined")
            and d.execute_script("return document.readyState") == "complete"
        )
    )


def save_screenshot(driver: WebDriver, name: str) -> Path:
    """The page as a PNG under ``build/artifacts/screenshots/`` (kept after the run)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
