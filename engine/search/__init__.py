"""Evolutionary (and random) search over allocation functions, with a durable run folder."""

from __future__ import annotations

from typing import Callable

from engine.loading import load_model
from engine.progress import Progress, no_progress
from engine.search.controller import SearchController
from engine.search.evaluator import ParallelEvaluator, SessionEvaluator
from engine.search.search import Search, SearchSettings
from engine.search.store import RunStore
from engine.session import Session

__all__ = ["RunStore", "Search", "SearchController", "SearchSettings", "open_search"]


def open_search(run: str, settings: SearchSettings | None = None, *, devices: list[str] | None = None,
                dtype: str = "auto", on_event: Callable[[object], None] = lambda e: None,
                progress: Progress = no_progress, status: Callable[[str], None] = lambda m: None) -> Search:
    """A new search in `run` (settings given) or the one stored there (settings None: resume).

    `devices`: one model copy and evaluator per device (e.g. every visible GPU); default: one, auto."""
    store = RunStore(run)
    if settings is None:
        settings = SearchSettings.from_json(store.settings())
    else:
        store.create(settings.to_json())
    evaluators = []
    for device in devices or ["auto"]:
        loaded = load_model(settings.model, dtype=dtype, device=device, status=status)
        session = Session(loaded, settings.data, progress=progress)
        evaluators.append(SessionEvaluator(session, settings.sparsity, settings.metric, settings.fitness))
    evaluator = evaluators[0] if len(evaluators) == 1 else ParallelEvaluator(evaluators)
    status("preparing caches (calibration, scores, row orders)")
    evaluator.prepare(progress)
    session = evaluators[0].session

    def held_out(methods: list[str]) -> dict:
        out = {}
        for method in methods:
            session.prune(session.allocate(method, settings.sparsity, settings.metric), settings.metric)
            out[method] = session.perplexity("evaluation")
        return out

    return Search(settings, store, evaluator, held_out=held_out, on_event=on_event)
