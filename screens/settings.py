"""Search settings: target sparsity, metric, fitness, strategy, profile granularity, population, generations,
selection stages, the zero-shot tasks of the compare pane (the engine's SearchSettings, which validates them);
the run folder and the cluster (RunOptions)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Select, Static

from engine.choices import FITNESS, FITNESS_LABELS, GRANULARITIES, GRANULARITY_LABELS, METRICS, STRATEGIES
from screens.text_box import TextBox
from workbench.contract import RunOptions


class SettingsScreen(ModalScreen[tuple | None]):
    """Edits the next search's settings and run options; dismissed with (settings, options), or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="settings.cancel"),
                Binding("ctrl+s", "save", "Apply", id="settings.apply")]

    def __init__(self, settings, options: RunOptions, validate: Callable[..., object]) -> None:
        """`settings`: the engine's SearchSettings; `validate(settings, **fields)`: those settings with the dialog's
        fields, or ValueError saying what is wrong (the engine's check)."""
        super().__init__()
        self.settings = settings
        self.options = options
        self.validate = validate

    def compose(self) -> ComposeResult:
        p, o = self.settings, self.options
        with Vertical(id="settings-box"):
            yield Static("[b]Search settings[/b]  (ctrl+s apply, escape cancel)")
            with Grid(id="settings-grid"):
                yield Label("target sparsity")
                yield TextBox(str(p.sparsity), id="sparsity")
                yield Label("metric")
                yield Select([(m, m) for m in METRICS], value=p.metric, allow_blank=False, id="metric")
                yield Label("fitness")
                yield Select([(FITNESS_LABELS[f], f) for f in FITNESS], value=p.fitness, allow_blank=False,
                             id="fitness")
                yield Label("strategy")
                yield Select([(s, s) for s in STRATEGIES], value=p.strategy, allow_blank=False, id="strategy")
                yield Label("profile granularity")
                yield Select([(GRANULARITY_LABELS[g], g) for g in GRANULARITIES], value=p.granularity,
                             allow_blank=False, id="granularity")
                yield Label("population")
                yield TextBox(str(p.population), id="population")
                yield Label("generations")
                yield TextBox(str(p.generations), id="generations")
                yield Label("selection stages")
                yield TextBox("auto" if p.stages_are_auto else p.stages_text,
                              placeholder="none; auto; or tokens:keep,... e.g. 512:8", id="stages")
                yield Label("run folder")
                yield TextBox(o.run, id="run")
                yield Label("cluster (Ray)")
                yield TextBox(o.cluster, placeholder="empty: this model; local; ray://head:10001", id="cluster")
                yield Label("workers")
                yield TextBox(str(o.workers or ""), placeholder="one per GPU", id="workers")
                yield Label("zero-shot tasks")
                yield TextBox(",".join(p.tasks), placeholder="compare pane: e.g. general_facts or arc_easy,piqa",
                              id="tasks")
                yield Label("zero-shot limit")
                yield TextBox(str(p.limit or ""), placeholder="every example", id="limit")
                yield Label("resume that run")
                yield Select([("no, start a new run", False), ("yes, continue it", True)], value=o.resume,
                             allow_blank=False, id="resume")
            yield Static("", id="settings-error")
            with Horizontal(id="settings-buttons"):
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "apply" else self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        value = lambda wid: self.query_one(f"#{wid}").value  # noqa: E731
        error = self.query_one("#settings-error", Static)
        try:
            sparsity = float(value("sparsity"))
            population, generations = int(value("population")), int(value("generations"))
            workers, limit = int(value("workers") or 0), int(value("limit") or 0)
        except ValueError:
            error.update("sparsity must be a number; population, generations, workers and the zero-shot limit "
                         "whole numbers")
            return
        if not value("run").strip():
            error.update("the run folder is empty")
            return
        try:
            settings = self.validate(
                self.settings, sparsity=sparsity, metric=value("metric"), fitness=value("fitness"),
                strategy=value("strategy"), granularity=value("granularity"), population=population,
                generations=generations, stages=value("stages").strip(), tasks=value("tasks"), limit=limit or None)
        except ValueError as exc:
            error.update(str(exc))
            return
        options = replace(self.options, run=value("run").strip(), resume=value("resume"),
                          cluster=value("cluster").strip(), workers=max(0, workers))
        self.dismiss((settings, options))
