"""Model sessions for the headless commands: from the command line's model and data options, or from the
model and data a search run was made with."""

from __future__ import annotations

from engine.errors import WorkbenchError
from engine.loading import load_model
from engine.session import Session
from workbench.console import ProgressBars
from workbench.options import data_config


def open_session(args, source: str | None, bars: ProgressBars, restorable: bool = True) -> Session:
    loaded = load_model(source, dtype=args.dtype, device=args.device, device_map=getattr(args, "device_map", None),
                        trust_remote_code=args.trust_remote_code, status=bars.status)
    return Session(loaded, data_config(args), progress=bars, restorable=restorable)


def run_best(run: str):
    """(settings, best candidate's text) of the search stored in `run`; one line when it has no best yet."""
    from engine.search.start import stored_settings
    from engine.search.store import RunStore

    store = RunStore(run)
    settings = stored_settings(store)
    best = (store.load_state(repair=False) or {}).get("best")
    if best is None:
        raise WorkbenchError(f"run {run} has no scored candidate yet")
    return settings, best["text"]


def open_run_session(args, settings, bars: ProgressBars, restorable: bool = True) -> Session:
    """The model and data of a search run's `settings`, on the command line's dtype and device(s)."""
    loaded = load_model(settings.model, dtype=args.dtype, device=args.device, device_map=args.device_map,
                        status=bars.status)
    return Session(loaded, settings.data, progress=bars, restorable=restorable)
