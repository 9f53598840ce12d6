"""Browser tests: a real headless Chromium against a real site (see tests/support/browser.py).
They need Debian's chromium and chromium-driver (``make system`` installs them)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.browser import CHROMEDRIVER, CHROMIUM, chromium

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.fail(
        f"the browser tests need {CHROMIUM} and {CHROMEDRIVER}: run `make system` "
        "(Debian packages chromium and chromium-driver)",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def fresh(browser: WebDriver) -> WebDriver:
    """The module's browser with no cookies: each test logs in as whom it needs."""
    browser.delete_all_cookies()
    return browser
