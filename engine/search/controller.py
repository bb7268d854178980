"""Run a search in a background thread and drive it from any other thread."""

from __future__ import annotations

import threading

from engine.search.control import Control
from engine.search.events import SearchError


class SearchController:
    """Drives any search with `run(control)` and `on_event` (the DSA or the structured search)."""

    def __init__(self, search):
        self.search = search
        self.control = Control()
        self.result = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the search was already started")
        self._thread = threading.Thread(target=self._run, name="dsa-search", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self.search.run(self.control)
        except Exception as exc:  # reported as an event; the thread ends cleanly
            self.error = exc
            self.search.on_event(SearchError(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)))

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self) -> None:
        self.control.step()

    def stop(self, after_candidate: bool = False) -> None:
        self.control.stop(after_candidate)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True once the search thread has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running
