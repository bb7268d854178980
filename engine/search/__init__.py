"""Evolutionary (and random) search over allocation functions, with a durable run folder."""

from __future__ import annotations

from typing import Callable

from engine.errors import WorkbenchError
from engine.loading import load_model
from engine.progress import Progress, no_progress
from engine.search.controller import SearchController
from engine.search.evaluator import ParallelEvaluator, SessionEvaluator
from engine.search.search import Search, SearchSettings
from engine.search.store import RunStore
from engine.session import Session

__all__ = ["RunStore", "Search", "SearchController", "SearchSettings", "open_search"]


def open_search(run: str, settings: SearchSettings | None = None, *, devices: list[str] | None = None,
                dtype: str = "auto", session: Session | None = None,
                on_event: Callable[[object], None] = lambda e: None, progress: Progress = no_progress,
                status: Callable[[str], None] = lambda m: None) -> Search:
    """A new search in `run` (settings given) or the one stored there (settings None: resume).

    `session`: evaluate on this already loaded model (the TUI's); otherwise one model copy and
    evaluator per device in `devices` (e.g. every visible GPU), default one on the auto device."""
    store = RunStore(run)
    if settings is None:
        settings = SearchSettings.from_json(store.settings())
    else:
        store.create(settings.to_json())
    if session is not None and (session.data != settings.data or session.loaded.source != settings.model):
        raise WorkbenchError(f"run {run} was made with another model or other data settings than the loaded ones")
    sessions = [session] if session is not None else [
        Session(load_model(settings.model, dtype=dtype, device=d, status=status), settings.data, progress=progress)
        for d in devices or ["auto"]]
    evaluators = [SessionEvaluator(s, settings.sparsity, settings.metric, settings.fitness) for s in sessions]
    evaluator = evaluators[0] if len(evaluators) == 1 else ParallelEvaluator(evaluators)
    status("preparing caches (calibration, scores, row orders)")
    evaluator.prepare(progress)
    held = sum(sum(s.cache_bytes().values()) for s in sessions)
    status(f"caches ready on {len(sessions)} device(s): {held / 2**20:.0f} MiB "
           f"({', '.join(f'{k} {v / 2**20:.0f}' for k, v in sessions[0].cache_bytes().items())} MiB each)")
    return Search(settings, store, evaluator, held_out=evaluators[0].held_out, on_event=on_event)
