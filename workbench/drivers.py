"""The TUI's side of each search kind (the DSA search, the structured one): a driver owns the search's controller,
its state as the engine announced it, and the turning of the search's events into pane updates. The App keeps the
layout, the bindings and the generic workers; it hands each driver the events of its search, on the UI thread."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from functools import partial

from textual.message import Message

from engine.search import events as ev
from engine.search.control import SearchState
from screens.compare import Compare
from screens.dashboard import Dashboard
from screens.editor import Editor
from screens.export import Export
from screens.leaderboard import Leaderboard
from screens.messages import PreviewRequested
from screens.structured import Levels, Structured
from workbench.contract import AllocationView, RunOptions, ScoredCandidate
from workbench.event_text import event_text
from workbench.views import allocation_view

RATE_WINDOW_S = 60.0  # the dashboard's candidates per minute count the scores of this last span


class EngineEvent(Message):
    """An event object from a search thread, for the driver of that search."""

    def __init__(self, event, driver: SearchDriver) -> None:
        super().__init__()
        self.event = event
        self.driver = driver


class StatusChanged(Message):
    """A status line from engine work: for a search's driver, or the dashboard's (driver None)."""

    def __init__(self, text: str, driver: SearchDriver | None = None) -> None:
        super().__init__()
        self.text = text
        self.driver = driver


def describe_progress(stage: str, done: int, total: int) -> str:
    """A status line for long engine work (calibration counts tokens; a level database, blocks)."""
    share = f"{100 * done / max(1, total):.0f}%"
    if stage == "calibration":
        return f"calibration {share} ({done:,} of {total:,} tokens)"
    return f"{stage} {share} ({done} of {total})"


class SearchDriver:
    """What both kinds share: the controller, the state, requests (pause, resume, step, stop), thread-safe
    callbacks for the engine (events, status, progress) that post to the UI thread."""

    def __init__(self, app) -> None:
        self.app = app
        self.controller = None
        self.state = SearchState.IDLE

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.running

    def request(self, action: str) -> None:
        """pause, resume, step or stop: asked of the search, whose events say when it happened."""
        if self.controller is not None:
            getattr(self.controller, action)()

    # -- called in engine threads ------------------------------------------------------------------
    def post_event(self, event) -> None:
        self.app.post_message(EngineEvent(event, self))

    def post_status(self, text: str) -> None:
        self.app.post_message(StatusChanged(text, self))

    def post_progress(self, stage: str, done: int, total: int) -> None:
        self.post_status(describe_progress(stage, done, total))

    # -- on the UI thread --------------------------------------------------------------------------
    def handle(self, event) -> None:
        if isinstance(event, ev.StateChanged):
            self.state = SearchState(event.state)
            self.app.refresh_bindings()
        self.on_event(event)

    def on_event(self, event) -> None:
        raise NotImplementedError

    def show_status(self, text: str) -> None:
        raise NotImplementedError


class DsaDriver(SearchDriver):
    """The DSA search: the dashboard's plots and status line, the leaderboard, and the search settings."""

    def __init__(self, app, settings, options: RunOptions) -> None:
        """`settings`: the engine's SearchSettings of the next search (new runs); `options`: where it runs."""
        super().__init__(app)
        self.settings = settings
        self.options = options
        self.seeds: list[str] = []  # functions the editor put into the next search's first population
        self.generations: list[int] = []
        self.best_curve: list[float] = []
        self.median_curve: list[float] = []
        self.scored_times: deque[float] = deque(maxlen=10_000)
        self.workers: ev.WorkersChanged | None = None
        self.best: ScoredCandidate | None = None

    def apply(self, chosen: tuple | None) -> None:
        """The settings dialog's result: (settings, options), or None when cancelled. A new target or metric
        redraws the baselines."""
        if chosen is None or chosen == (self.settings, self.options):
            return
        settings, self.options = chosen
        changed = (settings.sparsity, settings.metric) != (self.settings.sparsity, self.settings.metric)
        self.settings = settings
        compare = self.app.query_one(Compare)
        compare.set_tasks(settings.tasks)
        if changed:
            compare.reset()
            self.show_baselines()
            editor = self.app.query_one(Editor)
            if editor.text:  # the editor's preview at the new target
                self.app.post_message(PreviewRequested(editor.text))
        self.app.show_status()

    def show_baselines(self) -> None:
        """Uniform and OWL, and the model's per-block importance, on the dashboard (computed in a worker)."""
        def work() -> None:
            p = self.settings
            views = {m: self.app.api.allocation(m, p.sparsity, p.metric) for m in ("uniform", "owl")}
            importance = self.app.api.importance(p.metric)
            self.app.call_from_thread(plot, views, importance)
            if not self.running:  # a running search's status stays
                self.app.status("ready: s starts a search, e opens the editor, ? lists every key")

        def plot(views: dict[str, AllocationView], importance: dict[str, tuple[float, ...]]) -> None:
            if not self.app.is_running:
                return
            dash = self.app.query_one(Dashboard)
            for name, view in views.items():
                dash.show_allocation(name, view)
            for name, values in importance.items():
                dash.show_importance(name, values)

        self.app.run_worker(work, thread=True, exclusive=True, group="baselines", exit_on_error=False)

    def start(self) -> None:
        try:
            self.controller = self.app.api.start_search(self.settings, self.options, list(self.seeds), self.post_event,
                                                        self.post_status, self.post_progress)
        except ValueError as exc:
            self.app.notify(str(exc), title="search", severity="error", timeout=10)
            return
        self.seeds = []
        if not self.options.resume:  # a new run: nothing of the one before on the dashboard
            self.generations, self.best_curve, self.median_curve = [], [], []
            self.scored_times.clear()
            self.workers = self.best = None
            self.app.query_one(Dashboard).show_fitness([], [], [])
        self.show_status(f"search: run folder {self.options.run}")

    def show_status(self, text: str) -> None:
        self.app.status_text = text
        self.app.show_status()

    def summary(self) -> str:
        """The search's part of the dashboard's status line."""
        now = time.monotonic()
        recent = sum(t > now - RATE_WINDOW_S for t in self.scored_times)
        rate = f" | {recent} cand/min" if recent else ""
        best = f" | best {self.best.fitness:.3f}" if self.best else ""
        workers = f" | {event_text(self.workers)}" if self.workers else ""
        return f"search: {self.state}{workers}{rate}{best}"

    def view(self, c: ScoredCandidate) -> AllocationView:
        info = self.app.info
        return allocation_view(c.text, self.settings.sparsity, c.ratios, info.layout if info else ())

    def show_best(self, cand: ScoredCandidate) -> None:
        """The search's own best (its NewBest event), or an editor evaluation better than every best so far."""
        self.best = cand
        self.app.query_one(Dashboard).show_allocation("best", self.view(cand))

    def add_evaluated(self, cand: ScoredCandidate) -> None:
        """A function the editor had scored: on the leaderboard, and the best if better than every best so far."""
        if not self.app.is_running:
            return
        self.app.query_one(Leaderboard).add(cand)
        if self.best is None or cand.fitness < self.best.fitness:
            self.show_best(cand)
        self.app.notify(f"fitness {cand.fitness:.3f}: {cand.text}")

    def scored(self, c: ev.Candidate) -> ScoredCandidate:
        """An engine candidate as the panes see it, with the strategy and final stage of its search."""
        settings = self.controller.settings
        return ScoredCandidate(c.index, c.generation, c.text, c.fitness, c.ratios, c.seconds, c.reason,
                               settings.strategy, c.stage, c.stage == len(settings.stage_keep))

    def add_seed(self, text: str) -> None:
        if text not in self.seeds:
            self.seeds.append(text)
        self.app.notify(f"the next search starts with {len(self.seeds)} seeded function(s)")

    def select(self, c: ScoredCandidate) -> None:
        """A leaderboard row chosen: on the dashboard, in the compare and export panes, and in the editor (a
        profile as the palette function closest to it)."""
        self.app.query_one(Dashboard).show_allocation("selected", self.view(c))
        self.app.query_one(Export).use_function(c.text)
        self.app.query_one(Compare).add_function(c.text)
        editor = self.app.query_one(Editor)
        if c.text.startswith("profile:"):
            self.app.run_worker(partial(self._distill, c.text, editor.text), thread=True, group="distill",
                                exclusive=True, exit_on_error=False)
            self.app.notify("selected a profile: on the dashboard, compare and export panes; the editor gets the "
                            "function closest to it")
        else:
            editor.set_text(c.text)
            self.app.notify(f"selected {c.text}: on the dashboard, in the editor, compare and export panes")

    def _distill(self, profile: str, replacing: str) -> None:
        """In a worker: the palette function closest to a profile, into the editor unless the editor's text
        changed from `replacing` while it was computed."""
        try:
            function, rmse = self.app.api.distill(profile, self.settings.sparsity, self.settings.metric)
        except ValueError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), title="distill", severity="error")
            return
        self.app.call_from_thread(self._distilled, function, rmse, replacing)

    def _distilled(self, function: str, rmse: float, replacing: str) -> None:
        for editor in self.app.query(Editor):
            placed = editor.set_text(function, replacing)
            where = "" if placed else " (the editor keeps what you typed meanwhile)"
            self.app.notify(f"distilled: {function} (rms {rmse:.3f} from the profile's block ratios){where}")

    def on_event(self, event) -> None:
        text = event_text(event)
        if isinstance(event, ev.StateChanged):
            if self.state == SearchState.STOPPED:
                self.options = replace(self.options, resume=event.resumable)
            elif self.state == SearchState.FINISHED:
                self.options = replace(self.options, resume=False)
            elif self.state == SearchState.FAILED:
                self.options = replace(self.options, resume=event.resumable)
                self.app.notify(event.message, title="search failed", severity="error", timeout=10)
        elif isinstance(event, ev.NewBest):
            self.show_best(self.scored(event.candidate))
            text = None
        elif isinstance(event, (ev.CandidateScored, ev.CandidateRejected)) and event.candidate.scored:
            self.scored_times.append(time.monotonic())
            self.app.query_one(Leaderboard).add(self.scored(event.candidate))
        elif isinstance(event, ev.WorkersChanged):
            self.workers = event
            text = None
        elif isinstance(event, ev.GenerationDone) and event.best is not None:
            self.generations.append(event.generation + 1)  # counted from 1, as the status line
            self.best_curve.append(event.best)
            self.median_curve.append(event.median)
            self.app.query_one(Dashboard).show_fitness(self.generations, self.best_curve, self.median_curve)
        if text is not None:
            self.app.status_text = text
        self.app.show_status()


class StructuredDriver(SearchDriver):
    """The structured search: the structured pane's plots, structures and status."""

    def __init__(self, app) -> None:
        super().__init__(app)
        self.best: float | None = None
        self.detail = ""

    def start(self, run: str, settings) -> None:
        """A new search with `settings` (the engine's StructuredSettings), or the one stored in `run` resumed."""
        try:
            self.controller, info = self.app.api.start_structured(run, settings, self.post_event, self.post_status,
                                                                  self.post_progress)
        except ValueError as exc:
            self.app.notify(str(exc), title="structured search", severity="error", timeout=10)
            return
        self.app.query_one(Structured).set_levels(Levels(info.heads, info.mlp_levels), info.stages, info.offspring)
        self.show_status(f"run folder {info.run}: {info.note}")

    def show_status(self, text: str | None = None) -> None:
        """The structured pane's status: the search's state, best KL, and the latest detail line."""
        if text is not None:
            self.detail = text
        best = f" | best KL {self.best:.5f}" if self.best is not None else ""
        for pane in self.app.query(Structured):
            pane.set_status(f"structured search: {self.state}{best}\n{self.detail}")

    def on_event(self, event) -> None:
        pane = self.app.query_one(Structured)
        if isinstance(event, ev.StateChanged) and self.state == SearchState.FAILED:
            self.app.notify(event.message, title="structured search failed", severity="error", timeout=10)
        elif isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
            pane.candidate_scored(event.candidate.stage, event.candidate.text, event.candidate.fitness)
        elif isinstance(event, ev.NewBest):
            self.best = event.candidate.fitness
            pane.show_structure("best", event.candidate.text)
        elif isinstance(event, ev.GenerationDone):
            pane.new_generation()
        keep = isinstance(event, (ev.NewBest, ev.GenerationDone, ev.WorkersChanged))  # the detail line stays
        self.show_status(None if keep else event_text(event, kl=True))
