"""Search settings: target sparsity, metric, fitness, strategy, profile granularity, population, generations,
selection stages, run folder, cluster; the zero-shot tasks of the compare pane."""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Select, Static

from engine.choices import (DEFAULT_FITNESS, DEFAULT_GENERATIONS, DEFAULT_GRANULARITY, DEFAULT_METRIC,
                            DEFAULT_POPULATION, DEFAULT_RUN, DEFAULT_SEARCH_STAGES, DEFAULT_SPARSITY, DEFAULT_STRATEGY,
                            FITNESS, FITNESS_LABELS, GRANULARITIES, GRANULARITY_LABELS, METRICS, STRATEGIES)
from engine.zeroshot import parse_tasks
from screens.text_box import TextBox


@dataclass(frozen=True)
class SearchParams:
    sparsity: float = DEFAULT_SPARSITY
    metric: str = DEFAULT_METRIC
    fitness: str = DEFAULT_FITNESS
    strategy: str = DEFAULT_STRATEGY
    granularity: str = DEFAULT_GRANULARITY  # evopress and hybrid profiles: block, group or linear
    population: int = DEFAULT_POPULATION
    generations: int = DEFAULT_GENERATIONS
    stages: str = DEFAULT_SEARCH_STAGES  # TOKENS:KEEP,... before the whole fitness split
    run: str = DEFAULT_RUN
    resume: bool = False
    cluster: str = ""  # "": candidates on the loaded model; "local" or a Ray address: on Ray workers
    workers: int = 0  # 0: the cluster's default (one per GPU)
    tasks: str = ""  # zero-shot tasks the compare pane scores next to perplexity (engine.zeroshot)
    limit: int = 0  # 0: every example of each task


class SettingsScreen(ModalScreen[SearchParams | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="settings.cancel"),
                Binding("ctrl+s", "save", "Apply", id="settings.apply")]

    def __init__(self, params: SearchParams) -> None:
        super().__init__()
        self.params = params

    def compose(self) -> ComposeResult:
        p = self.params
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
                yield TextBox(p.stages, placeholder="none; auto; or tokens:keep,... e.g. 512:8", id="stages")
                yield Label("run folder")
                yield TextBox(p.run, id="run")
                yield Label("cluster (Ray)")
                yield TextBox(p.cluster, placeholder="empty: this model; local; ray://head:10001", id="cluster")
                yield Label("workers")
                yield TextBox(str(p.workers or ""), placeholder="one per GPU", id="workers")
                yield Label("zero-shot tasks")
                yield TextBox(p.tasks, placeholder="compare pane: e.g. general_facts or arc_easy,piqa", id="tasks")
                yield Label("zero-shot limit")
                yield TextBox(str(p.limit or ""), placeholder="every example", id="limit")
                yield Label("resume that run")
                yield Select([("no, start a new run", False), ("yes, continue it", True)], value=p.resume,
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
        try:
            sparsity = float(value("sparsity"))
            population, generations = int(value("population")), int(value("generations"))
            workers, limit = int(value("workers") or 0), int(value("limit") or 0)
        except ValueError:
            self.query_one("#settings-error", Static).update("sparsity must be a number; population, generations, "
                                                            "workers and the zero-shot limit whole numbers")
            return
        if not 0 < sparsity < 1 or population < 2 or generations < 1 or not value("run").strip():
            self.query_one("#settings-error", Static).update(
                "need 0 < sparsity < 1, population >= 2, generations >= 1 and a run folder")
            return
        self.dismiss(replace(self.params, sparsity=sparsity, metric=value("metric"), fitness=value("fitness"),
                             strategy=value("strategy"), granularity=value("granularity"), population=population, generations=generations,
                             stages=value("stages").strip(), run=value("run").strip(), resume=value("resume"), cluster=value("cluster").strip(),
                             workers=max(0, workers), tasks=",".join(parse_tasks(value("tasks"))), limit=max(0, limit)))
