"""The Textual App: panes in tabs, engine work in thread workers, engine events posted as messages."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from engine.search import events as ev
from engine.search.control import allows
from engine.zeroshot import parse_tasks

from screens.compare import Compare
from screens.dashboard import Dashboard
from screens.editor import Editor
from screens.export import Export
from screens.help import HelpScreen
from screens.leaderboard import Leaderboard
from screens.messages import (AllocationView, CandidateSelected, CompareDone, CompareProgressed, CompareRequested,
                              EvaluateRequested, ExportDone, ExportProgressed, ExportRequested, PreviewReady, PreviewRequested,
                              ScoredCandidate, SeedRequested, StructuredExportRequested, StructuredStartRequested)
from screens.panes import Panes
from screens.plots import LivePlot
from screens.settings import SearchParams, SettingsScreen
from screens.structured import Levels, Structured, StructuredParams
from workbench.views import allocation_view

REDRAW_S = 1.0
QUIT_WAIT_S = 30.0  # how long quitting waits for a stopped search to write its checkpoint
SEARCH_ACTIONS = {"start_search": "start", "pause": "pause", "resume": "resume", "step": "step", "stop": "stop"}
# pane: (letter, F-key, title, tooltip, the widget that takes the focus there)
PANES = {
    "dashboard": ("d", "f2", "Dashboard", "Plots and status", None),
    "leaderboard": ("l", "f3", "Leaderboard", "Scored candidates", "#leaderboard-table"),
    "editor": ("e", "f4", "Editor", "Build or edit a function", "#function-input"),
    "compare": ("c", "f5", "Compare", "Allocations side by side", "#compare-table"),
    "export": ("x", "f6", "Export", "Write a pruned model", "#export-method"),
    "structured": ("u", "f7", "Structured", "Structured pruning: heads and neurons (s/p/r/n/t drive its search there)",
                   "#structured-start"),
}


def pane_bindings() -> list[Binding]:
    """Priority bindings: the App switches the pane and moves the focus before it reads the next key, so keys typed
    right after the switch land in the new pane. Where a text box has the focus, Textual leaves it the letters (the
    F-keys still switch)."""
    return [Binding(f"{letter},{fkey}", f"pane('{pane}')", title, id=f"pane.{pane}", tooltip=tooltip, show=False,
                    priority=True) for pane, (letter, fkey, title, tooltip, _) in PANES.items()]


@dataclass
class AppConfig:
    params: SearchParams = field(default_factory=SearchParams)
    structured: StructuredParams = field(default_factory=StructuredParams)
    redraw_s: float = REDRAW_S


class EngineEvent(Message):
    """An event object from a search thread: the DSA search, or the structured one (`structured`)."""

    def __init__(self, event, structured: bool = False) -> None:
        super().__init__()
        self.event = event
        self.structured = structured


class StatusChanged(Message):
    """A status line from engine work: the dashboard's, or the structured pane's (`structured`)."""

    def __init__(self, text: str, structured: bool = False) -> None:
        super().__init__()
        self.text = text
        self.structured = structured


def describe_progress(stage: str, done: int, total: int) -> str:
    """A status line for long engine work (calibration counts tokens; a level database, blocks)."""
    share = f"{100 * done / max(1, total):.0f}%"
    if stage == "calibration":
        return f"calibration {share} ({done:,} of {total:,} tokens)"
    return f"{stage} {share} ({done} of {total})"


class WorkbenchApp(App):
    """The workbench. Each search's state is one reactive value set only from the engine's StateChanged
    events; the bindings, the footer, the command palette and the status line all read it."""

    CSS_PATH = "app.tcss"
    TITLE = "dsa-workbench"
    BINDINGS = [
        Binding("s", "start_search", "Start", id="search.start", tooltip="Start (or resume) the search"),
        Binding("p", "pause", "Pause", id="search.pause", tooltip="Pause the search"),
        Binding("r", "resume", "Resume", id="search.resume", tooltip="Resume the paused search"),
        Binding("n", "step", "Step", id="search.step", tooltip="Evaluate one candidate, then pause"),
        Binding("t", "stop", "Stop", id="search.stop", tooltip="Stop the search (checkpoint kept)"),
        Binding("o", "settings", "Settings", id="settings", tooltip="Target sparsity, metric, population..."),
        Binding("question_mark,f1", "help", "Help", id="help", tooltip="Every key binding"),
        Binding("q,ctrl+q", "quit", "Quit", id="quit", tooltip="Quit (a running search stops, checkpoint kept)"),
        *pane_bindings(),
        # Tab moves the focus before the next key is read (a priority binding): text typed right after it
        # lands in the widget it moved to, however busy the machine
        Binding("tab", "focus_next", "Next field", id="focus.next", tooltip="Move the focus to the next widget",
                show=False, priority=True),
        Binding("shift+tab", "focus_previous", "Previous field", id="focus.previous",
                tooltip="Move the focus to the previous widget", show=False, priority=True),
    ]

    search_state: reactive[str] = reactive("idle", init=False)
    structured_state: reactive[str] = reactive("idle", init=False)

    def __init__(self, api, config: AppConfig | None = None) -> None:
        super().__init__()
        self.api = api
        self.config = config or AppConfig()
        self.params = self.config.params
        self.info = None
        self.seeds: list[str] = []
        self.controller = None
        self.generations: list[int] = []
        self.best_curve: list[float] = []
        self.median_curve: list[float] = []
        self.scored_times: list[float] = []
        self.cluster_workers: ev.WorkersChanged | None = None  # (App.workers is Textual's worker manager)
        self.best: ScoredCandidate | None = None
        self.status_text = "loading model…"
        self.structured_controller = None
        self.structured_best: float | None = None
        self.structured_detail = ""

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Panes(initial="dashboard", id="panes"):
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
                yield Structured(self.config.structured)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(self.config.redraw_s, self.redraw_visible)
        self.query_one(Compare).set_tasks(parse_tasks(self.params.tasks))
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
        p = self.params
        info = self.info
        model = f"{info.label} on {info.device} ({info.dtype})" if info else "model: loading"
        rate = ""
        recent = [t for t in self.scored_times if t > time.monotonic() - 60]
        if recent:
            rate = f" | {len(recent)} cand/min"
        best = f" | best {self.best.fitness:.3f}" if self.best else ""
        w = self.cluster_workers
        starting = f", {w.starting} starting" if w and w.starting else ""
        workers = f" | workers {w.total} ({w.busy} busy, {w.failed} failed{starting})" if w else ""
        return (f"{model} | {p.metric} | target {p.sparsity:g} | fitness {p.fitness} | search: {self.search_state}"
                f"{workers}{rate}{best} | {self.api.memory()}\n{self.status_text}")

    # -- bindings --------------------------------------------------------------------------------
    def structured_active(self) -> bool:
        return self.query_one(TabbedContent).active == "structured"

    def allowed(self, action: str) -> bool:
        """s/p/r/n/t drive the search of the pane in view (the structured one on its pane, else DSA), as the
        engine's lifecycle allows in that search's state; settings while the DSA search can start."""
        if action in SEARCH_ACTIONS:
            state = self.structured_state if self.structured_active() else self.search_state
            return allows(state, SEARCH_ACTIONS[action])
        if action == "settings":
            return allows(self.search_state, "start") and not self.structured_active()
        return True

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "pane":  # priority bindings reach the App under a dialog too
            return not isinstance(self.screen, ModalScreen)
        return self.allowed(action)

    def watch_search_state(self) -> None:
        self.refresh_bindings()
        self.show_status()

    def watch_structured_state(self) -> None:
        self.refresh_bindings()
        self.show_structured_status()

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            name = binding.action.split("(")[0]
            if name not in ("quit", "focus_next", "focus_previous") and self.allowed(name):
                yield SystemCommand(binding.description, binding.tooltip,
                                    lambda a=binding.action: self.run_action(a))

    def action_pane(self, pane: str) -> None:
        """Show the pane and focus where its keys work, now: the next key read goes there. (The dashboard has
        nothing to focus; the focus leaves the old pane, whose hidden text box would otherwise take keys.)"""
        self.query_one(TabbedContent).active = pane
        target = PANES[pane][4]
        self.screen.set_focus(self.query_one(target) if target else None)
        self.refresh_bindings()

    @on(TabbedContent.TabActivated)
    def _focus_pane(self, event: TabbedContent.TabActivated) -> None:
        """A tab clicked with the mouse: focus the pane's main widget. Not for a pane already left again, nor when
        the focus is in the pane already (a pane key put it there, and the user may have moved it since)."""
        target = PANES[event.pane.id][4]
        focused = self.focused
        if (target and self.query_one(TabbedContent).active == event.pane.id
                and not (focused is not None and event.pane in focused.ancestors)):
            self.screen.set_focus(self.query_one(target))

    def action_help(self) -> None:
        sections = {"Everywhere (letters type into text boxes: F-keys switch panes there)": list(self.BINDINGS)}
        for widget in (Leaderboard, Editor, Compare):
            sections[widget.__name__] = list(widget.BINDINGS)
        from screens.editor import StageView

        sections["Editor ops (focus the op list)"] = list(StageView.BINDINGS)
        self.push_screen(HelpScreen(sections))

    def action_settings(self) -> None:
        def apply(params: SearchParams | None) -> None:
            if params is not None and params != self.params:
                changed = (params.sparsity, params.metric) != (self.params.sparsity, self.params.metric)
                self.params = params
                self.query_one(Compare).set_tasks(parse_tasks(params.tasks))
                if changed:
                    self.query_one(Compare).reset()
                    self.show_baselines()
                self.show_status()

        self.push_screen(SettingsScreen(self.params), apply)

    def action_start_search(self) -> None:
        if self.structured_active():
            params = self.query_one(Structured).read_params()
            if params is not None:
                self.post_message(StructuredStartRequested(params))
            return
        if self.info is None:
            self.notify("the model is still loading", severity="warning")
            return
        try:
            self.controller = self.api.start_search(self.params, list(self.seeds), self.engine_event, self.status,
                                                    self.work_progress)
        except ValueError as exc:
            self.notify(str(exc), title="search", severity="error", timeout=10)
            return
        self.seeds = []
        self.status_text = f"search: run folder {self.params.run}"

    def _control(self, method: str) -> None:
        """Ask the search of the pane in view to pause / resume / step / stop; its events say when it did."""
        controller = self.structured_controller if self.structured_active() else self.controller
        if controller is not None:
            getattr(controller, method)()

    def action_pause(self) -> None:
        self._control("pause")

    def action_resume(self) -> None:
        self._control("resume")

    def action_step(self) -> None:
        self._control("step")

    def action_stop(self) -> None:
        self._control("stop")

    async def action_quit(self) -> None:
        """Stop every search (now), wait off the UI thread until each has written its checkpoint, exit."""
        active = [c for c in (self.controller, self.structured_controller) if c is not None and c.running]
        for controller in active:
            controller.stop()
        if active:
            self.status_text = "quitting: stopping the search (its checkpoint stays)…"
            self.show_status()
            await asyncio.to_thread(lambda: [c.join(QUIT_WAIT_S) for c in active])
        self.exit()

    # -- workers (engine work off the UI thread) ---------------------------------------------------
    def status(self, text: str) -> None:
        """Thread-safe status line update."""
        self.post_message(StatusChanged(text))

    def work_progress(self, stage: str, done: int, total: int) -> None:
        """Thread-safe progress of long engine work, shown on the status line."""
        self.post_message(StatusChanged(describe_progress(stage, done, total)))

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_model(self) -> None:
        info = self.api.load(self.status, self.work_progress)
        self.call_from_thread(self.model_loaded, info)

    def model_loaded(self, info) -> None:
        self.info = info
        self.status_text = f"loaded {info.label}: {info.blocks} blocks"
        self.refresh_bindings()
        self.show_status()
        self.show_baselines()
        editor = self.query_one(Editor)
        if editor.text:
            self.post_message(PreviewRequested(editor.text))

    @work(thread=True, exclusive=True, group="baselines", exit_on_error=False)
    def show_baselines(self) -> None:
        p = self.params
        views = {m: self.api.allocation(m, p.sparsity, p.metric) for m in ("uniform", "owl")}
        importance = self.api.importance(p.metric)
        self.call_from_thread(self._plot_baselines, views, importance)
        self.status("ready: s starts a search, e opens the editor, ? lists every key")

    def _plot_baselines(self, views: dict[str, AllocationView], importance: dict[str, tuple[float, ...]]) -> None:
        dash = self.query_one(Dashboard)
        for name, view in views.items():
            dash.show_allocation(name, view)
        for name, values in importance.items():
            dash.show_importance(name, values)

    def show_structured_status(self, detail: str | None = None) -> None:
        """The structured pane's status: its search's state, best KL, and the latest detail line."""
        if detail is not None:
            self.structured_detail = detail
        best = f" | best KL {self.structured_best:.5f}" if self.structured_best is not None else ""
        for pane in self.query(Structured):
            pane.set_status(f"structured search: {self.structured_state}{best}\n{self.structured_detail}")

    @on(StructuredStartRequested)
    def _structured_start(self, message: StructuredStartRequested) -> None:
        if self.info is None:
            self.notify("the model is still loading", severity="warning")
            return
        if not allows(self.structured_state, "start"):
            return

        def status(text: str) -> None:
            self.post_message(StatusChanged(text, structured=True))

        def progress(stage: str, done: int, total: int) -> None:
            self.post_message(StatusChanged(describe_progress(stage, done, total), structured=True))

        try:
            controller, info = self.api.start_structured(
                message.params, lambda event: self.post_message(EngineEvent(event, structured=True)), status, progress)
        except ValueError as exc:
            self.notify(str(exc), title="structured search", severity="error", timeout=10)
            return
        self.structured_controller = controller
        self.query_one(Structured).set_levels(Levels(info.heads, info.mlp_levels), info.stages, info.offspring)
        self.show_structured_status(f"run folder {info.run}: {info.note}")

    @on(StructuredExportRequested)
    @work(thread=True, exclusive=True, group="structured export", exit_on_error=False)
    def structured_export(self, message: StructuredExportRequested) -> None:
        def progress(stage: str, done: int, total: int) -> None:
            self.call_from_thread(self.show_structured_status, f"export: {stage} {done}/{total}")
        path = self.api.export_structured(message.params.run, message.out, message.finetune_tokens,
                                          message.params.lr, message.force, progress)
        self.call_from_thread(self.show_structured_status, f"exported: {path}")
        self.call_from_thread(self.notify, f"exported the smaller model to {path}")

    def engine_event(self, event) -> None:
        """Called in the search thread: hand the event to the UI thread as a message."""
        self.post_message(EngineEvent(event))

    @on(PreviewRequested)
    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def preview(self, message: PreviewRequested) -> None:
        if self.info is None:
            return  # previewed again once the model is loaded
        p = self.params
        try:
            view, error = self.api.allocation(message.text, p.sparsity, p.metric), None
        except ValueError as exc:
            view, error = None, str(exc)
        self.post_message(PreviewReady(message.text, view, error))

    @on(EvaluateRequested)
    @work(thread=True, group="evaluate", exit_on_error=False)
    def evaluate(self, message: EvaluateRequested) -> None:
        p = self.params
        started = time.perf_counter()
        fitness, view = self.api.fitness(message.text, p.sparsity, p.metric)
        cand = ScoredCandidate(-1, -1, view.method, fitness, view.block_ratios, time.perf_counter() - started)
        self.call_from_thread(self._add_candidate, cand)
        if self.best is None or fitness < self.best.fitness:
            self.call_from_thread(self._show_best, cand)
        self.call_from_thread(self.notify, f"fitness {fitness:.3f}: {view.method}")

    @on(CompareRequested)
    @work(thread=True, group="compare", exit_on_error=False)
    def compare(self, message: CompareRequested) -> None:
        p = self.params
        progress = lambda stage, done, total: self.post_message(  # noqa: E731
            CompareProgressed(message.method, stage.removeprefix("zero-shot "), done, total))
        try:
            (ppl, zero_shot), error = self.api.held_out(message.method, p.sparsity, p.metric, parse_tasks(p.tasks),
                                                        p.limit or None, progress), None
        except ValueError as exc:
            ppl, zero_shot, error = None, None, str(exc)
        self.post_message(CompareDone(message.method, ppl, error, zero_shot))

    @on(ExportRequested)
    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export(self, message: ExportRequested) -> None:
        p = self.params
        progress = lambda stage, done, total: self.post_message(ExportProgressed(stage, done, total))  # noqa: E731
        try:
            path, error = self.api.export(message.method, p.sparsity, p.metric, message.out, message.format,
                                          message.dtype, message.force, progress), None
        except ValueError as exc:
            path, error = None, str(exc)
        self.post_message(ExportDone(path, error))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every worker error becomes a notification; the app keeps running."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            self.notify(message, title=f"{event.worker.group} failed", severity="error", timeout=10)
            if event.worker.group == "load":
                self.status_text = f"could not load the model: {message}"
                self.show_status()

    # -- results -------------------------------------------------------------------------------
    @on(StatusChanged)
    def _status(self, message: StatusChanged) -> None:
        if message.structured:
            self.show_structured_status(message.text)
        else:
            self.status_text = message.text

    # Workers' results can arrive while the app shuts down, its panes already gone: `self.query` finds none then.
    @on(PreviewReady)
    def _preview_ready(self, message: PreviewReady) -> None:
        for editor in self.query(Editor):
            editor.show_preview(message)
        for dashboard in self.query(Dashboard):
            if message.view is not None:
                dashboard.show_allocation("editor", message.view)

    @on(CompareDone)
    def _compare_done(self, message: CompareDone) -> None:
        for compare in self.query(Compare):
            compare.show_result(message)

    @on(CompareProgressed)
    def _compare_progress(self, message: CompareProgressed) -> None:
        for compare in self.query(Compare):
            compare.show_progress(message)

    @on(ExportProgressed)
    def _export_progress(self, message: ExportProgressed) -> None:
        for export in self.query(Export):
            export.show_progress(message)

    @on(ExportDone)
    def _export_done(self, message: ExportDone) -> None:
        self.query_one(Export).show_result(message)
        if message.error is None:
            self.notify(f"exported to {message.path}")

    @on(SeedRequested)
    def _seed(self, message: SeedRequested) -> None:
        if message.text not in self.seeds:
            self.seeds.append(message.text)
        self.notify(f"the next search starts with {len(self.seeds)} seeded function(s)")

    @on(CandidateSelected)
    def _selected(self, message: CandidateSelected) -> None:
        c = message.candidate
        self.query_one(Dashboard).show_allocation("selected", self.candidate_view(c))
        self.query_one(Export).use_function(c.text)
        self.query_one(Compare).add_function(c.text)
        if c.text.startswith("profile:"):
            self.distill_into_editor(c.text, self.query_one(Editor).text)
            self.notify("selected a profile: on the dashboard, compare and export panes; the editor gets the "
                        "function closest to it")
        else:
            self.query_one(Editor).set_text(c.text)
            self.notify(f"selected {c.text}: on the dashboard, in the editor, compare and export panes")

    @work(thread=True, group="distill", exclusive=True, exit_on_error=False)
    def distill_into_editor(self, profile: str, replacing: str) -> None:
        """The palette function closest to a profile, into the editor (to read and edit it as a function), unless
        the editor's text changed from `replacing` while it was computed."""
        try:
            function, rmse = self.api.distill(profile, self.params.sparsity, self.params.metric)
        except ValueError as exc:
            self.call_from_thread(self.notify, str(exc), title="distill", severity="error")
            return
        self.call_from_thread(self._distilled, function, rmse, replacing)

    def _distilled(self, function: str, rmse: float, replacing: str) -> None:
        for editor in self.query(Editor):
            placed = editor.set_text(function, replacing)
            where = "" if placed else " (the editor keeps what you typed meanwhile)"
            self.notify(f"distilled: {function} (rms {rmse:.3f} from the profile's block ratios){where}")

    def _add_candidate(self, cand: ScoredCandidate) -> None:
        self.query_one(Leaderboard).add(cand)

    def _show_best(self, cand: ScoredCandidate) -> None:
        """The search's own best (its NewBest event), or an editor evaluation better than every best so far."""
        self.best = cand
        self.query_one(Dashboard).show_allocation("best", self.candidate_view(cand))

    def candidate_view(self, c: ScoredCandidate) -> AllocationView:
        return allocation_view(c.text, self.params.sparsity, c.ratios, self.info.layout if self.info else ())

    def _scored_candidate(self, c: ev.Candidate) -> ScoredCandidate:
        """An engine candidate as the panes see it, with the strategy and final stage of its search."""
        settings = self.controller.settings
        return ScoredCandidate(c.index, c.generation, c.text, c.fitness, c.ratios, c.seconds, c.reason,
                               settings.strategy, c.stage, c.stage == len(settings.stage_keep))

    def _structured_event(self, event) -> None:
        pane = self.query_one(Structured)
        if isinstance(event, ev.StateChanged):
            self.structured_state = event.state
            if event.state == "stopped":
                self.show_structured_status(f"stopped after {event.evaluated} evaluations; " +
                                            ("s resumes from the checkpoint" if event.resumable else "nothing was written"))
            elif event.state == "failed":
                self.show_structured_status(f"failed: {event.message}")
                self.notify(event.message, title="structured search failed", severity="error", timeout=10)
        elif isinstance(event, ev.CandidateStarted):
            self.show_structured_status(f"generation {event.generation}: scoring candidate {event.index + 1}")
        elif isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
            c = event.candidate
            pane.candidate_scored(c.stage, c.text, c.fitness)
            result = f"KL {c.fitness:.5f}" if c.scored else f"rejected: {c.reason}"
            self.show_structured_status(f"generation {c.generation}, stage {c.stage + 1}: {result} "
                                        f"in {c.seconds:.1f} s")
        elif isinstance(event, ev.StageDone):
            self.show_structured_status(f"generation {event.generation}, stage {event.stage + 1} done: "
                                        f"{event.scored} -> {event.survivors}, best KL {event.best:.5f}")
        elif isinstance(event, ev.NewBest):
            self.structured_best = event.candidate.fitness
            pane.show_structure("best", event.candidate.text)
        elif isinstance(event, ev.GenerationDone):
            pane.new_generation()
        elif isinstance(event, ev.SearchFinished):
            held = ", ".join(f"{k}: {v:.2f}" for k, v in event.held_out.items())
            self.show_structured_status(f"finished; held-out perplexity without fine-tune: {held}")

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if message.structured:
            self._structured_event(event)
        elif isinstance(event, ev.StateChanged):
            self.search_state = event.state
            if event.state == "stopped":
                self.status_text = (f"stopped after {event.evaluated} candidates; s resumes from the checkpoint"
                                    if event.resumable else "stopped before the search started; nothing was written")
                self.params = replace(self.params, resume=event.resumable)
            elif event.state == "finished":
                self.params = replace(self.params, resume=False)
            elif event.state == "failed":
                self.status_text = f"search failed: {event.message}"
                self.params = replace(self.params, resume=event.resumable)
                self.notify(event.message, title="search failed", severity="error", timeout=10)
        elif isinstance(event, ev.NewBest):
            self._show_best(self._scored_candidate(event.candidate))
        elif isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
            c = event.candidate
            if c.scored:
                self.scored_times.append(time.monotonic())
                self._add_candidate(self._scored_candidate(c))
            repeat = f" (same allocation as #{c.duplicate_of + 1})" if c.duplicate_of is not None else ""
            self.status_text = (f"candidate {c.index + 1} (generation {c.generation}, stage {c.stage + 1}): "
                                + (f"{c.fitness:.3f}" if c.scored else f"rejected: {c.reason}") + repeat
                                + f" | {c.text}")
        elif isinstance(event, ev.CandidateStarted):
            self.status_text = f"evaluating candidate {event.index + 1}: {event.text}"
        elif isinstance(event, ev.WorkersChanged):
            self.cluster_workers = event
        elif isinstance(event, ev.GenerationDone) and event.best is not None:
            self.generations.append(event.generation)
            self.best_curve.append(event.best)
            self.median_curve.append(event.median)
            self.query_one(Dashboard).show_fitness(self.generations, self.best_curve, self.median_curve)
        elif isinstance(event, ev.SearchFinished):
            held = ", ".join(f"{k}: {v:.2f}" for k, v in event.held_out.items())
            self.status_text = f"search finished; held-out perplexity: {held}"
        self.show_status()


def make_app(config: AppConfig | None = None, api=None) -> WorkbenchApp:
    """The one factory for the CLI, Pilot tests and snapshot tests (which pass a fake API)."""
    if api is None:
        from workbench.engine_api import EngineAPI

        api = EngineAPI()
    return WorkbenchApp(api, config)


__all__ = ["AppConfig", "WorkbenchApp", "make_app"]
