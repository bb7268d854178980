"""Waiting for something another thread makes true (engine events, files), with deadlines that scale with the
machine: a test that passes on an idle machine must pass beside CPU-burning processes too.

`SLOWNESS` is how much slower than an idle 2-core machine this one runs now (a short pure-Python loop is timed
when the tests start; at least 1; `DSA_TEST_SLOWNESS` sets it). Every deadline and latency bound in the tests is
`scaled(seconds)`."""

from __future__ import annotations

import os
import time

IDLE_LOOP_S = 0.045  # the loop below on an idle core of the 2-core development machine


def _measure() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return time.perf_counter() - start


SLOWNESS = float(os.environ.get("DSA_TEST_SLOWNESS") or max(1.0, min(_measure(), _measure()) / IDLE_LOOP_S))


def scaled(seconds: float) -> float:
    return seconds * SLOWNESS


def wait_for(predicate, timeout: float = 30.0) -> bool:
    """Polls `predicate` until it holds or `scaled(timeout)` seconds have passed."""
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def join_while_progressing(controller, seen: list, quiet: float = 120.0) -> bool:
    """Joins a search thread as long as it makes progress: False only once no new event has come for
    `scaled(quiet)` seconds (a stalled search), however long the whole search takes on this machine."""
    count, last = len(seen), time.monotonic()
    while not controller.join(1.0):
        if len(seen) != count:
            count, last = len(seen), time.monotonic()
        elif time.monotonic() - last > scaled(quiet):
            return False
    return True
