"""Waiting for something another thread makes true (engine events, files), with a deadline."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False
