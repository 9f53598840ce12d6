"""Drive a reader's blocking ``reads()`` from a test, the way the terminal's reader thread does."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from siteclock.hw.base import BadgeRead, Reader, ReaderItem, ReaderState, ReaderStatus


class ReaderFeed:
    """Runs ``reader.reads()`` in a thread; tests wait for the items it yields.

    ``history`` keeps every item in order, including those a wait skipped over.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.history: list[ReaderItem] = []
        self.error: BaseException | None = None
        self._items: queue.Queue[ReaderItem] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="reader-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self.reader.reads():
                self.history.append(item)
                self._items.put(item)
        except BaseException as error:  # a reader must never raise: the test checks this
            self.error = error

    def wait_for(self, match: Callable[[ReaderItem], bool], timeout: float = 5.0) -> ReaderItem:
        """The next item for which ``match`` is true; earlier items are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._items.get(timeout=left)
            except queue.Empty:
                break
            if match(item):
                return item
        raise AssertionError(f"no matching item within {timeout} s; history: {self.history}")

    def read(self, timeout: float = 5.0) -> BadgeRead:
        item = self.wait_for(lambda i: isinstance(i, BadgeRead), timeout)
        assert isinstance(item, BadgeRead)
        return item

    def status(self, state: ReaderState, timeout: float = 5.0) -> ReaderStatus:
        item = self.wait_for(lambda i: isinstance(i, ReaderStatus) and i.state == state, timeout)
        assert isinstance(item, ReaderStatus)
        return item

    def quiet_for(self, seconds: float) -> list[ReaderItem]:
        """Wait ``seconds`` and return whatever arrived meanwhile."""
        time.sleep(seconds)
        items = []
        while not self._items.empty():
            items.append(self._items.get_nowait())
        return items

    def reads(self) -> list[BadgeRead]:
        return [i for i in self.history if isinstance(i, BadgeRead)]

    def close(self, timeout: float = 5.0) -> float:
        """Close the reader; return how long ``reads()`` took to end."""
        started = time.monotonic()
        self.reader.close()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "reads() did not end after close()"
        assert self.error is None, f"reads() raised {self.error!r}"
        return time.monotonic() - started


@pytest.fixture
def nfcpy_lines_audible() -> Iterator[None]:
    """nfcpy's log lines emitted for the test's duration: ``siteclock.log.setup`` (run by
    earlier tests of the session) mutes them below CRITICAL, and some tests count them."""
    nfc_logger = logging.getLogger("nfc")
    before = nfc_logger.level
    nfc_logger.setLevel(logging.NOTSET)
    yield
    nfc_logger.setLevel(before)
