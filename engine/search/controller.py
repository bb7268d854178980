"""Run a search in a background thread, from its preparation to its end, and drive it from any other.

The thread prepares (loads the model, builds the caches: `prepare(control)` returns the search),
opens the run folder, runs the loop and announces how it ended. Every state change is a
`StateChanged` event from the Control, so the CLI and the TUI follow the same lifecycle:
preparing -> running <-> paused / stepping -> stopping -> stopped | finished | failed.
"""

from __future__ import annotations

import threading
from typing import Callable

from engine.search.control import Control, SearchState, SearchStopped
from engine.search.core import CheckpointedSearch, describe
from engine.search.store import RunStore


class SearchController:
    def __init__(self, prepare: Callable[[Control], CheckpointedSearch], store: RunStore,
                 on_event: Callable[[object], None], settings=None):
        """`settings`: the search's settings (new or stored), for whoever shows the search."""
        self.prepare = prepare
        self.store = store
        self.settings = settings
        self.control = Control(on_event)
        self.search: CheckpointedSearch | None = None
        self.result = None  # the SearchFinished event, once finished
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the search was already started")
        self.control.enter(SearchState.PREPARING)
        self._thread = threading.Thread(target=self._run, name="dsa-search", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end, message = SearchState.FINISHED, ""
        try:
            self.search = self.prepare(self.control)
            self.control.checkpoint()
            self.search.begin()  # the run folder appears only now, with its first checkpoint
            self.control.enter(SearchState.RUNNING)
            self.result = self.search.run(self.control)
        except SearchStopped:
            end = SearchState.STOPPED
        except Exception as exc:  # noqa: BLE001 - reported as the "failed" state; the thread ends cleanly
            self.error = exc
            end, message = SearchState.FAILED, describe(exc)
        if self.search is not None:
            self.search.close()
        self.control.enter(end, evaluated=self.evaluated, resumable=end != SearchState.FINISHED and self.store.exists,
                           message=message)

    # -- requests (any thread) -------------------------------------------------------------------
    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self) -> None:
        self.control.step()

    def stop(self, after_candidate: bool = False) -> None:
        self.control.stop(after_candidate)

    @property
    def state(self) -> SearchState:
        return self.control.state

    @property
    def evaluated(self) -> int:
        """Candidates in the run's log so far (0 before its folder exists)."""
        if self.search is not None and self.search.state is not None:
            return self.search.state["evaluated"]
        if self.store.exists:
            return (self.store.load_state(repair=False) or {}).get("evaluated", 0)
        return 0

    @property
    def running(self) -> bool:
        """The thread is alive (preparing, searching or ending)."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True once the search thread has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running
