"""The Textual App: panes in tabs, engine work in thread workers, each search's events handed to its driver."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from textual import on, work
from textual.actions import parse as parse_action
from textual.app import App, ComposeResult, SystemCommand
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from engine.choices import DEFAULT_STRUCTURED_RUN
from engine.errors import WorkbenchError
from engine.search.core import describe

from screens.compare import Compare
from screens.dashboard import Dashboard
from screens.editor import Editor
from screens.export import Export
from screens.help import HelpScreen
from screens.leaderboard import Leaderboard
from screens.messages import (CandidateSelected, CompareDone, CompareProgressed, CompareRequested, EvaluateRequested,
                              ExportDone, ExportProgressed, ExportRequested, PreviewReady, PreviewRequested,
                              SeedRequested, StructuredExportRequested, StructuredStartRequested)
from screens.panes import Panes
from screens.plots import LivePlot
from screens.settings import SettingsScreen
from screens.structured import Structured
from workbench.contract import RunOptions, ScoredCandidate
from workbench.drivers import DsaDriver, EngineEvent, StatusChanged, StructuredDriver, describe_progress
from workbench.keys import APP_BINDINGS, PANES, help_sections

REDRAW_S = 1.0
QUIT_WAIT_S = 30.0  # how long quitting waits for a stopped search to write its checkpoint
QUIT_NOTICE_S = 3600.0  # the quitting notice stays until the app exits


class Quitting(Exception):
    """Raised by the app's progress callbacks once the user quits: work that can be done again (a calibration,
    a comparison) ends at its next step instead of holding the exit."""


def while_running(handler):
    """For results that can arrive while the app shuts down, its panes half removed: dropped then."""
    @functools.wraps(handler)
    def guarded(self, message) -> None:
        if self.is_running:
            handler(self, message)
    return guarded


def error_line(exc: BaseException) -> str:
    """One line for a failed job: a user error's message (the engine API hands them on as ValueError), else the
    exception's type and first line (an out-of-memory error runs to many)."""
    return describe(exc.__cause__ if isinstance(exc.__cause__, WorkbenchError) else exc)


@dataclass
class AppConfig:
    settings: object = None  # the engine's SearchSettings of the next DSA search; None: the API's defaults
    options: RunOptions = field(default_factory=RunOptions)
    structured: object = None  # the engine's StructuredSettings the structured pane starts with; None: the defaults
    structured_run: str = DEFAULT_STRUCTURED_RUN
    redraw_s: float = REDRAW_S


class WorkbenchApp(App):
    """The workbench: the panes, the bindings and the workers of one-off engine work. Each search has a driver
    (workbench.drivers) holding its state as the engine announced it; the bindings, the footer, the command
    palette and the status lines read it."""

    CSS_PATH = "app.tcss"
    TITLE = "dsa-workbench"
    BINDINGS = APP_BINDINGS

    def __init__(self, api, config: AppConfig | None = None) -> None:
        super().__init__()
        self.api = api
        self.config = config or AppConfig()
        self.info = None
        self.load_error: str | None = None  # why the model could not be loaded, once that is known
        self.compare_queue: deque[str] = deque()  # methods the compare pane asked to score, in order
        self.compare_lock, self.comparing = threading.Lock(), False  # comparing: the compare worker runs
        self.status_text = "loading model…"
        self.quitting = False
        self.dsa = DsaDriver(self, self.config.settings or api.search_settings(), self.config.options)
        self.structured = StructuredDriver(self)

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Panes({pane: target for pane, (*_, target) in PANES.items()}, initial="dashboard", id="panes"):
            with TabPane("Dashboard F2", id="dashboard"):
                yield Dashboard()
            with TabPane("Leaderboard F3", id="leaderboard"):
                yield Leaderboard()
            with TabPane("Editor F4", id="editor"):
                yield Editor(self.api.palette(), self.api.parse, self.api.format)
            with TabPane("Compare F5", id="compare"):
                yield Compare()
            with TabPane("Export F6", id="export"):
                yield Export()
            with TabPane("Structured F7", id="structured"):
                yield Structured(self.config.structured_run, self.config.structured or self.api.structured_settings(),
                                 self.api.structured_settings)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(self.config.redraw_s, self.redraw_visible)
        self.query_one(Compare).set_tasks(self.dsa.settings.tasks)
        self.load_model()

    def redraw_visible(self) -> None:
        """UI-owned timer: redraw plots that have new data and are on screen; refresh the status."""
        for plot in self.query(LivePlot):
            plot.redraw_if_dirty()
        self.show_status()

    def show_status(self) -> None:
        for dashboard in self.query(Dashboard):  # none while the app shuts down
            dashboard.set_status(self.status_line())

    def status_line(self) -> str:
        p, info = self.dsa.settings, self.info
        model = (f"{info.label} on {info.device} ({info.dtype})" if info
                 else "model: failed to load" if self.load_error else "model: loading")
        return (f"{model} | {p.metric} | target {p.sparsity:g} | fitness {p.fitness} | {self.dsa.summary()} | "
                f"{self.api.memory()}\n{self.status_text}")

    # -- bindings --------------------------------------------------------------------------------
    def structured_active(self) -> bool:
        return self.query_one(TabbedContent).active == "structured"

    def driver(self) -> DsaDriver | StructuredDriver:
        """The search that s/p/r/n/t drive: the structured one on its pane, the DSA one elsewhere."""
        return self.structured if self.structured_active() else self.dsa

    def check_action(self, action: str, parameters) -> bool | None:
        """s/p/r/n/t drive the search of the pane in view (the structured one on its pane, else DSA), as the
        engine's lifecycle allows in that search's state; settings while the DSA search can start."""
        if action == "search":
            return not self.quitting and self.driver().state.allows(parameters[0])
        if action == "settings":
            return self.dsa.state.allows("start") and not self.structured_active()
        if action == "pane":  # priority bindings reach the App under a dialog too
            return not isinstance(self.screen, ModalScreen)
        return True

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            _, name, parameters = parse_action(binding.action)
            if name not in ("quit", "focus_next", "focus_previous") and (
                    name == "pane" or self.check_action(name, parameters)):  # (the palette is a modal screen)
                yield SystemCommand(binding.description, binding.tooltip,
                                    lambda a=binding.action: self.run_action(a))

    def action_pane(self, pane: str) -> None:
        self.query_one(Panes).show(pane)
        self.refresh_bindings()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections()))

    def action_settings(self) -> None:
        self.push_screen(SettingsScreen(self.dsa.settings, self.dsa.options, self.api.search_settings), self.dsa.apply)

    def action_search(self, action: str) -> None:
        """start, pause, resume, step or stop the search of the pane in view; its events say when it did."""
        if action != "start":
            self.driver().request(action)
        elif self.structured_active():
            chosen = self.query_one(Structured).read_settings()
            if chosen is not None:
                self.post_message(StructuredStartRequested(*chosen))
        elif self.model_ready():
            self.dsa.start()

    def current(self, target: tuple) -> bool:
        """Whether a result computed for `target` (sparsity, metric) still holds: the settings may have changed
        while it was computed (its row was reset then, its preview asked for again)."""
        return target == (self.dsa.settings.sparsity, self.dsa.settings.metric)

    def model_ready(self) -> bool:
        """Whether the model is loaded; when it is not, says why (still loading, or it failed to load)."""
        if self.info is None:
            self.notify(f"no model: {self.load_error}" if self.load_error else "the model is still loading",
                        severity="error" if self.load_error else "warning")
        return self.info is not None

    def busy(self, group: str, what: str) -> bool:
        """Whether a job of `group` is still running (one at a time); says so when it is."""
        running = any(w.group == group and not w.is_finished for w in self.workers)
        if running:
            self.notify(f"{what} is still running", severity="warning")
        return running

    def action_report(self) -> None:
        """The DSA run's report (report.md and PNGs) into RUN-report, replaced if there; one at a time."""
        if self.busy("report", "a report"):
            return
        self.notify(f"writing the report of {self.dsa.options.run}…")
        self.write_report(self.dsa.options.run)

    @work(thread=True, group="report", exit_on_error=False)
    def write_report(self, run: str) -> None:
        try:
            path = self.api.report(run, f"{run.rstrip('/')}-report")
        except ValueError as exc:
            self.call_from_thread(self.notify, f"no report: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"report written: {path}/report.md")

    def action_quit(self) -> None:
        """Stop every search now, and calibrations and comparisons at their next step (their progress callbacks
        raise Quitting); then, in a worker, so keys are still answered meanwhile, wait until each search has
        written its checkpoint and the jobs that cannot be dropped (an export, a report) have ended, and exit."""
        if self.quitting:
            return
        self.quitting = True
        with self.compare_lock:
            self.compare_queue.clear()  # comparisons not started yet: not worth waiting for
        active = [d.controller for d in (self.dsa, self.structured) if d.running]
        for controller in active:
            controller.stop()
        self.refresh_bindings()
        self.run_worker(self.finish_quit(active), group="quit")

    async def finish_quit(self, searches: list) -> None:
        if searches:
            self.say_quitting("quitting: stopping the search (its checkpoint stays)…")
            await asyncio.to_thread(lambda: [c.join(QUIT_WAIT_S) for c in searches])
        while jobs := [w for w in self.workers if not w.is_finished and w.group != "quit"]:
            self.say_quitting(f"quitting once these finish: {', '.join(sorted({w.group for w in jobs}))}…")
            try:
                await jobs[0].wait()
            except (WorkerCancelled, WorkerFailed):  # its error was shown already
                pass
        self.exit()

    def say_quitting(self, text: str) -> None:
        """On the dashboard's status line and as a notice on every pane; said once each time it changes."""
        if text != self.status_text:
            self.status_text = text
            self.show_status()
            self.clear_notifications()
            self.notify(text, timeout=QUIT_NOTICE_S)

    # -- workers (engine work off the UI thread) ---------------------------------------------------
    def status(self, text: str) -> None:
        """Thread-safe update of the dashboard's status line."""
        self.post_message(StatusChanged(text))

    def work_progress(self, stage: str, done: int, total: int) -> None:
        """Thread-safe progress of long engine work, shown on the dashboard's status line; raises Quitting once
        the user quits."""
        self.stop_if_quitting()
        self.status(describe_progress(stage, done, total))

    def stop_if_quitting(self) -> None:
        if self.quitting:
            raise Quitting

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_model(self) -> None:
        info = self.api.load(self.status, self.work_progress)
        self.call_from_thread(self.model_loaded, info)

    def model_loaded(self, info) -> None:
        if not self.is_running:
            return
        self.info = info
        self.status_text = f"loaded {info.label}: {info.blocks} blocks"
        self.refresh_bindings()
        self.show_status()
        self.dsa.show_baselines()
        editor = self.query_one(Editor)
        if editor.text:
            self.post_message(PreviewRequested(editor.text))

    @on(StructuredStartRequested)
    def _structured_start(self, message: StructuredStartRequested) -> None:
        if self.model_ready() and self.structured.state.allows("start"):
            self.structured.start(message.run, message.settings)

    @on(StructuredExportRequested)
    def _structured_export(self, message: StructuredExportRequested) -> None:
        if not self.busy("structured export", "an export of the smaller model"):
            self.structured_export(message)

    @work(thread=True, group="structured export", exit_on_error=False)
    def structured_export(self, message: StructuredExportRequested) -> None:
        def progress(stage: str, done: int, total: int) -> None:
            self.structured.post_status(f"export: {stage} {done}/{total}")
        path = self.api.export_structured(message.run, message.out, message.finetune_tokens, message.settings.lr,
                                          message.force, progress)
        self.structured.post_status(f"exported: {path}")
        self.call_from_thread(self.notify, f"exported the smaller model to {path}")

    @on(PreviewRequested)
    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def preview(self, message: PreviewRequested) -> None:
        if self.info is None:
            return  # previewed again once the model is loaded
        p = self.dsa.settings
        try:
            view, error = self.api.allocation(message.text, p.sparsity, p.metric), None
        except ValueError as exc:
            view, error = None, str(exc)
        self.post_message(PreviewReady(message.text, view, error, (p.sparsity, p.metric)))

    @on(EvaluateRequested)
    @work(thread=True, group="evaluate", exit_on_error=False)
    def evaluate(self, message: EvaluateRequested) -> None:
        p = self.dsa.settings
        started = time.perf_counter()
        fitness, view = self.api.fitness(message.text, p.sparsity, p.metric)
        cand = ScoredCandidate(-1, -1, view.method, fitness, view.block_ratios, time.perf_counter() - started)
        self.call_from_thread(self.dsa.add_evaluated, cand)

    @on(CompareRequested)
    def _compare_requested(self, message: CompareRequested) -> None:
        """Queued: one worker scores the compare pane's methods one after another (they share the model), so
        'evaluate all' holds one thread, not one per method."""
        with self.compare_lock:
            self.compare_queue.append(message.method)
            start, self.comparing = not self.comparing, True
        if start:
            self.compare()

    @work(thread=True, group="compare", exit_on_error=False)
    def compare(self) -> None:
        while True:
            with self.compare_lock:
                if not self.compare_queue:
                    self.comparing = False
                    return
                method = self.compare_queue.popleft()
            p = self.dsa.settings

            def progress(stage: str, done: int, total: int) -> None:
                self.stop_if_quitting()
                self.post_message(CompareProgressed(method, stage.removeprefix("zero-shot "), done, total))
            try:
                (ppl, zero_shot), error = self.api.held_out(method, p.sparsity, p.metric, p.tasks, p.limit,
                                                            progress), None
            except Exception as exc:  # noqa: BLE001 - the pane's cell says why, whatever failed
                ppl, zero_shot, error = None, None, error_line(exc)
            self.post_message(CompareDone(method, ppl, error, zero_shot, (p.sparsity, p.metric)))

    @on(ExportRequested)
    @work(thread=True, group="export", exit_on_error=False)
    def export(self, message: ExportRequested) -> None:
        p = self.dsa.settings
        progress = lambda stage, done, total: self.post_message(ExportProgressed(stage, done, total))  # noqa: E731
        try:
            path, error = self.api.export(message.method, p.sparsity, p.metric, message.out, message.format,
                                          message.dtype, message.force, progress), None
        except Exception as exc:  # noqa: BLE001 - the pane says why and its button comes back, whatever failed
            path, error = None, error_line(exc)
        self.post_message(ExportDone(path, error))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every worker error becomes a notification; the app keeps running."""
        if event.state == WorkerState.ERROR and not isinstance(event.worker.error, Quitting):
            message = error_line(event.worker.error)
            self.notify(message, title=f"{event.worker.group} failed", severity="error", timeout=10)
            if event.worker.group == "load":
                self.load_error = message
                self.status_text = f"could not load the model: {message}"
                self.show_status()

    # -- results -------------------------------------------------------------------------------
    @on(StatusChanged)
    @while_running
    def _status(self, message: StatusChanged) -> None:
        if message.driver is None:
            self.status_text = message.text
        else:
            message.driver.show_status(message.text)

    @on(EngineEvent)
    @while_running
    def _engine_event(self, message: EngineEvent) -> None:
        message.driver.handle(message.event)

    @on(PreviewReady)
    @while_running
    def _preview_ready(self, message: PreviewReady) -> None:
        if not self.current(message.target):
            return
        self.query_one(Editor).show_preview(message)
        if message.view is not None:
            self.query_one(Dashboard).show_allocation("editor", message.view)

    @on(CompareDone)
    @while_running
    def _compare_done(self, message: CompareDone) -> None:
        if self.current(message.target):
            self.query_one(Compare).show_result(message)

    @on(CompareProgressed)
    @while_running
    def _compare_progress(self, message: CompareProgressed) -> None:
        self.query_one(Compare).show_progress(message)

    @on(ExportProgressed)
    @while_running
    def _export_progress(self, message: ExportProgressed) -> None:
        self.query_one(Export).show_progress(message)

    @on(ExportDone)
    @while_running
    def _export_done(self, message: ExportDone) -> None:
        self.query_one(Export).show_result(message)
        if message.error is None:
            self.notify(f"exported to {message.path}")

    @on(SeedRequested)
    def _seed(self, message: SeedRequested) -> None:
        self.dsa.add_seed(message.text)

    @on(CandidateSelected)
    def _selected(self, message: CandidateSelected) -> None:
        self.dsa.select(message.candidate)


def make_app(config: AppConfig | None = None, api=None) -> WorkbenchApp:
    """The one factory for the CLI, Pilot tests and snapshot tests (which pass a fake API)."""
    if api is None:
        from workbench.engine_api import EngineAPI

        api = EngineAPI()
    return WorkbenchApp(api, config)


__all__ = ["AppConfig", "WorkbenchApp", "make_app"]
