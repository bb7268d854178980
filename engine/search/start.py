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
from engine.search.evaluator import ParallelEvaluator, SessionEvaluator
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


def search_controller(run: str, settings: SearchSettings | None = None, *, devices: list[str] | None = None,
                      dtype: str = "auto", device_map: str | None = None, session: Session | None = None,
                      on_event: Callable[[object], None] = lambda e: None, progress: Progress = no_progress,
                      status: Callable[[str], None] = lambda m: None) -> SearchController:
    """A new search in `run` (settings given) or the one stored there (settings None: resume).

    `session`: evaluate on this already loaded model (the TUI's); otherwise one model copy and
    evaluator per device in `devices` (e.g. every visible GPU), default one on the auto device, or one
    model spread over every GPU with `device_map`."""
    store = RunStore(run)
    if settings is None:
        settings = stored_settings(store)
        store.load_state(repair=False)  # a corrupt checkpoint fails now, not after the model is loaded
    else:
        store.check_new()
    if session is not None and (session.data != settings.data or session.loaded.source != settings.model):
        raise WorkbenchError(f"run {run} was made with another model or other data settings than the loaded ones")

    def prepare(control: Control) -> Search:
        def check(stage: str, done: int, total: int) -> None:
            control.checkpoint()
            progress(stage, done, total)

        sessions = [session] if session is not None else []
        for device in ([] if session is not None else devices or ["auto"]):
            sessions.append(Session(load_model(settings.model, dtype=dtype, device=device, device_map=device_map,
                                               status=status), settings.data, progress=progress))
            control.checkpoint()
        evaluators = [SessionEvaluator(s, settings.sparsity, settings.metric, settings.fitness) for s in sessions]
        evaluator = evaluators[0] if len(evaluators) == 1 else ParallelEvaluator(evaluators)
        status("preparing caches (calibration, scores, row orders)")
        evaluator.prepare(check)
        held = sum(sum(s.cache_bytes().values()) for s in sessions)
        status(f"caches ready on {len(sessions)} device(s): {held / 2**20:.0f} MiB "
               f"({', '.join(f'{k} {v / 2**20:.0f}' for k, v in sessions[0].cache_bytes().items())} MiB each)")
        return Search(settings, store, evaluator, held_out=evaluators[0].held_out, on_event=on_event)

    return SearchController(prepare, store, on_event)
