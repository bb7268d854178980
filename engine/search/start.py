"""A DSA search ready to start: its settings checked and its run folder vetted before any work, the
model loaded and the caches built in the search thread (so a stop works while preparing), the run
folder written only once all of that succeeded."""

from __future__ import annotations

from typing import Callable

from engine.errors import WorkbenchError
from engine.loading import load_model
from engine.progress import Progress, no_progress
from engine.search.control import Control
from engine.search.controller import SearchController
from engine.search.evaluator import SessionEvaluator
from engine.search.search import Search, SearchSettings
from engine.search.store import RunStore
from engine.session import Session


def stored_settings(store: RunStore) -> SearchSettings:
    """The settings of the search in `store`, or one line saying why they cannot be read."""
    settings = store.settings()
    try:
        return SearchSettings.from_json(settings)
    except (WorkbenchError, TypeError, ValueError, AttributeError) as exc:
        raise WorkbenchError(f"run folder {store.folder} is corrupt: run.json holds no valid settings ({exc})") from exc


def search_controller(run: str, settings: SearchSettings | None = None, *, dtype: str = "auto",
                      device: str = "auto", device_map: str | None = None, session: Session | None = None,
                      cluster: str | None = None, workers: int | None = None, connect_now: bool = True,
                      on_event: Callable[[object], None] = lambda e: None, progress: Progress = no_progress,
                      status: Callable[[str], None] = lambda m: None) -> SearchController:
    """A new search in `run` (settings given) or the one stored there (settings None: resume).

    Candidates are scored on `session` (the TUI's loaded model), on a model loaded here (on `device`,
    or spread over every GPU with `device_map`), or with `cluster` ("local": every GPU of this box, or
    CPU workers; or a Ray address) by `workers` Ray workers holding a model each. With `connect_now` (the CLI,
    on its main thread) the cluster is reached here, so an unreachable one is one line before any work; without
    (the TUI, whose main thread draws the screen: starting Ray takes seconds) in the search's thread."""
    store = RunStore(run)
    if settings is None:
        settings = stored_settings(store)
        store.load_state(repair=False)  # a corrupt checkpoint fails now, not after the model is loaded
    else:
        store.check_new()
    if session is not None and (session.data != settings.data or session.loaded.source != settings.model):
        raise WorkbenchError(f"run {run} was made with another model or other data settings than the loaded ones")
    if cluster and connect_now:
        from engine.search.cluster import connect

        connect(cluster, workers)

    def scorer(session: Session) -> SessionEvaluator:
        return SessionEvaluator(session, settings.sparsity, settings.metric, settings.fitness, settings.stage_tokens)

    def prepare(control: Control) -> Search:
        def check(stage: str, done: int, total: int) -> None:
            control.checkpoint()
            progress(stage, done, total)

        if cluster:
            from engine.search.cluster import ClusterEvaluator

            status(f"connecting to Ray ({cluster}) and starting its workers; each loads the model and builds its "
                   "caches")
            evaluator = ClusterEvaluator(cluster, lambda: scorer(Session(load_model(settings.model, dtype=dtype),
                                                                             settings.data)), workers, report=on_event)
        else:
            active = session or Session(load_model(settings.model, dtype=dtype, device=device, device_map=device_map,
                                                   status=status), settings.data, progress=progress)
            control.checkpoint()
            evaluator = scorer(active)
            status("preparing caches (calibration, weight ranks, block samples)")
        evaluator.prepare(check)
        if not cluster:
            caches = active.cache_bytes()
            status(f"caches ready: {sum(caches.values()) / 2**20:.0f} MiB "
                   f"({', '.join(f'{k} {v / 2**20:.0f}' for k, v in caches.items() if v)} MiB)")
        return Search(settings, store, evaluator, held_out=evaluator.held_out, on_event=on_event)

    return SearchController(prepare, store, on_event, settings)
