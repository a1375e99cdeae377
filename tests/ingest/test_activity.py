"""Background work steps aside for searches: SearchActivity.wait_quiet (shoebox.ingest.activity)."""

from __future__ import annotations

import threading
import time

from shoebox.ingest.activity import SearchActivity


def test_with_no_search_the_wait_is_over_at_once():
    assert SearchActivity().wait_quiet(0.2, 2.0) < 0.05


def test_a_running_search_holds_the_wait_until_it_ends_and_then_the_quiet_time():
    activity = SearchActivity()
    activity.begin()
    threading.Timer(0.3, activity.end).start()
    waited = activity.wait_quiet(0.2, 5.0)
    assert 0.45 <= waited < 2.0


def test_a_steady_search_load_delays_the_work_no_longer_than_the_bound():
    activity = SearchActivity()
    stop = threading.Event()

    def searches() -> None:
        while not stop.is_set():
            activity.begin()
            time.sleep(0.02)
            activity.end()

    t = threading.Thread(target=searches)
    t.start()
    try:
        waited = activity.wait_quiet(0.2, 0.5)
    finally:
        stop.set()
        t.join()
    assert 0.45 <= waited < 1.0


def test_a_stop_ends_the_wait():
    activity = SearchActivity()
    activity.begin()
    assert activity.wait_quiet(0.2, 5.0, stop=lambda: True) < 0.05
