"""Pause / resume / stop / step for a running search, checked between forward batches."""

from __future__ import annotations

import threading

POLL_S = 0.05


class SearchStopped(Exception):
    """Raised inside the search thread when a stop was asked for; the candidate in flight is dropped."""


class Control:
    """Thread-safe flags the search checks often (every forward batch): no wait is without a timeout."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._stop_now = threading.Event()
        self._stop_after = threading.Event()
        self._step = False

    # called from any thread
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        with self._lock:
            self._step = False
        self._running.set()

    def step(self) -> None:
        """Run one candidate, then pause again."""
        with self._lock:
            self._step = True
        self._running.set()

    def stop(self, after_candidate: bool = False) -> None:
        """Stop now (the candidate in flight is dropped and redone on resume) or after it."""
        (self._stop_after if after_candidate else self._stop_now).set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop_now.is_set() or self._stop_after.is_set()

    # called from the search thread
    def checkpoint(self, *_progress) -> None:
        """Raise SearchStopped if a stop was asked; wait here (polling) while paused.

        Has the progress-callback signature so it can be passed as one."""
        while True:
            if self._stop_now.is_set():
                raise SearchStopped()
            if self._running.wait(POLL_S):
                return

    def candidate_done(self) -> None:
        """After each candidate: end a single step, or stop if asked to stop after this candidate."""
        if self._stop_after.is_set():
            raise SearchStopped()
        with self._lock:
            if self._step:
                self._step = False
                self._running.clear()
