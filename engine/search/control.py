"""The lifecycle of a search: its states, what each allows, and the Control that owns them.

A search is in exactly one state, and the Control announces every change as a `StateChanged` event
at the moment it happens: "paused" once the search thread has really stopped working (not when a
pause was asked for), "running" or "stepping" once it works again, "stopping" as soon as a stop was
asked for. Requests come from any thread; the search thread calls `checkpoint()` often (every
forward batch) and `candidate_done()` after each candidate. Every transition and its event happen
under one lock, so events arrive in the order the states changed. No torch: the interface reads
SearchState too.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import Callable

from engine.search.events import StateChanged

class SearchState(StrEnum):
    """A search's state; each says which requests a user may make in it (`allows`)."""

    IDLE = "idle"
    PREPARING = "preparing"
    RUNNING = "running"
    PAUSED = "paused"
    STEPPING = "stepping"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"

    def allows(self, action: str) -> bool:
        """start, pause, resume, step or stop."""
        return action in _ACTIONS[self]

    @property
    def ended(self) -> bool:
        return self in (SearchState.STOPPED, SearchState.FINISHED, SearchState.FAILED)


_ACTIONS = {
    SearchState.IDLE: ("start",),
    SearchState.PREPARING: ("stop",),
    SearchState.RUNNING: ("pause", "step", "stop"),
    SearchState.PAUSED: ("resume", "step", "stop"),
    SearchState.STEPPING: ("pause", "resume", "stop"),
    SearchState.STOPPING: ("stop",),  # again: stop at once, dropping the candidate in flight
    SearchState.STOPPED: ("start",),
    SearchState.FINISHED: ("start",),
    SearchState.FAILED: ("start",),
}
WAIT_S = 0.5  # a paused thread wakes at least this often (a lost wake-up cannot hang it)


class SearchStopped(Exception):
    """Raised inside the search thread when a stop was asked for; the candidate in flight is dropped."""


class Control:
    """Pause / resume / step / stop requests and the search's state, shared by the threads."""

    def __init__(self, emit: Callable[[StateChanged], None] = lambda e: None):
        self._emit = emit
        self._cond = threading.Condition()
        self.state = SearchState.IDLE
        self._pause = False
        self._step = False
        self._stop: str | None = None  # None, "after" (the candidate in flight) or "now"

    # -- requests, from any thread ------------------------------------------------------------------
    def pause(self) -> None:
        with self._cond:
            if self.state.allows("pause"):
                self._pause, self._step = True, False

    def resume(self) -> None:
        with self._cond:
            if self.state.allows("resume"):
                self._pause, self._step = False, False
                if self.state == SearchState.STEPPING:
                    self._set(SearchState.RUNNING)  # already working: it simply will not pause after this candidate
                self._cond.notify_all()

    def step(self) -> None:
        """One candidate, then pause."""
        with self._cond:
            if self.state.allows("step"):
                self._pause, self._step = False, True
                if self.state == SearchState.RUNNING:
                    self._set(SearchState.STEPPING)
                self._cond.notify_all()

    def stop(self, after_candidate: bool = False) -> None:
        """Stop now (the candidate in flight is dropped and redone on resume) or after that candidate.
        While preparing there is no candidate: the stop is immediate."""
        with self._cond:
            if not self.state.allows("stop"):
                return
            now = not after_candidate or self.state == SearchState.PREPARING or self._stop == "now"
            self._stop = "now" if now else "after"
            self._pause = self._step = False
            self._set(SearchState.STOPPING)
            self._cond.notify_all()

    # -- the search thread --------------------------------------------------------------------------
    def checkpoint(self, *_progress) -> None:
        """Raise SearchStopped if a stop (now) was asked; block while paused. Has the progress-callback
        signature so it can be passed as one."""
        with self._cond:
            while True:
                if self._stop == "now":
                    raise SearchStopped()
                if not self._pause:
                    break
                if self.state != SearchState.PAUSED:
                    self._set(SearchState.PAUSED)
                self._cond.wait(WAIT_S)
            if self.state == SearchState.PAUSED:
                self._set(SearchState.STEPPING if self._step else SearchState.RUNNING)

    def candidate_done(self) -> None:
        """After each candidate: stop if a stop was asked, or pause after a single step."""
        with self._cond:
            if self._stop:
                raise SearchStopped()
            if self._step:
                self._step, self._pause = False, True

    # -- the controller ------------------------------------------------------------------------------
    def enter(self, state: SearchState, **details) -> None:
        """preparing, running (raises SearchStopped if a stop came first), or an ended state."""
        with self._cond:
            if state == SearchState.RUNNING and self._stop:
                raise SearchStopped()
            self._set(state, **details)

    @property
    def ended(self) -> bool:
        return self.state.ended

    def _set(self, state: SearchState, **details) -> None:
        if state != self.state or details:
            self.state = state
            self._emit(StateChanged(state, **details))
