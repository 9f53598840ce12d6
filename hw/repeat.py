"""Mark a badge presented again within a short window as a repeat.

A worker who taps twice in a row, or whose badge slides off and back onto the reader, must not
register ``out`` a second after ``in``. Readers already turn one *held* badge into one read;
this filter handles a badge *lifted and tapped again*. It only marks: the terminal decides what
a repeat means (show "already registered", keep it for evidence), nothing is dropped here.

Example::

    for item in mark_repeats(reader.reads(), window_s=10.0):
        if isinstance(item, BadgeRead) and item.repeat:
            feedback.already_registered()
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator

from siteclock.hw.base import BadgeRead, ReaderItem


def mark_repeats(
    items: Iterable[ReaderItem],
    window_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[ReaderItem]:
    """Yield ``items`` unchanged, except reads of a badge read less than ``window_s`` before.

    Those come out as copies with ``repeat=True``. The window is measured from the previous
    read of the same badge, repeat or not, so a badge tapped every few seconds stays a repeat
    until it has been left alone for ``window_s``. :class:`~hw.base.ReaderStatus` items pass
    through untouched and do not reset the window.

    :param items: what a reader's ``reads()`` yields.
    :param window_s: seconds within which a second read of the same badge is a repeat.
    :param clock: a monotonic clock in seconds; tests inject a fake one.
    """
    last_read: dict[str, float] = {}
    for item in items:
        if not isinstance(item, BadgeRead):
            yield item
            continue
        now = clock()
        # Forget badges whose window has closed, so the map stays as small as the window.
        for badge in [b for b, at in last_read.items() if now - at >= window_s]:
            del last_read[badge]
        previous = last_read.get(item.badge)
        last_read[item.badge] = now
        if previous is not None and now - previous < window_s:
            yield dataclasses.replace(item, repeat=True)
        else:
            yield item
