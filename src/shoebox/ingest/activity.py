"""Interactive activity (searches in progress, and when the last one ended), so that background
work — a model migration — can step aside: it sends its next batch only once searches have been
quiet for a moment, or after a bounded wait, so it still progresses under a steady search load."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request


class SearchActivity:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._last_end = 0.0

    def begin(self) -> None:
        with self._cond:
            self._running += 1

    def end(self) -> None:
        with self._cond:
            self._running -= 1
            self._last_end = time.monotonic()
            self._cond.notify_all()

    def wait_quiet(self, quiet_s: float, max_wait_s: float, stop: Callable[[], bool] | None = None) -> float:
        """Block until no search runs and none ended in the last `quiet_s` seconds, or `max_wait_s`
        passed (or `stop()`); returns the seconds waited."""
        started = time.monotonic()
        deadline = started + max_wait_s
        with self._cond:
            while not (stop and stop()):
                now = time.monotonic()
                quiet_for = now - self._last_end
                if self._running == 0 and quiet_for >= quiet_s:
                    break
                if now >= deadline:
                    break
                wait = deadline - now if self._running else min(deadline - now, quiet_s - quiet_for)
                self._cond.wait(min(max(wait, 0.005), 0.1))
        return time.monotonic() - started


async def searching(request: Request) -> AsyncIterator[None]:
    """A route dependency: the request counts as a search in progress until it has answered."""
    activity: SearchActivity = request.app.state.ctx.activity
    activity.begin()
    try:
        yield
    finally:
        activity.end()
