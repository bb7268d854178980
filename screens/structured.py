"""Structured mode: build the level database, run the training-aware search, export the smaller model.

Shows the selection stages of the current generation (candidates, survivors, tokens, best KL) and a
per-block plot of the kept heads and MLP neurons of the best structure and of the candidate in flight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Static

from screens.messages import StructuredExportRequested, StructuredStartRequested
from screens.plots import LivePlot
from screens.text_box import TextBox

STAGE_COLUMNS = ("stage", "in", "keep", "fine-tune", "fitness", "scored", "best KL")  # tokens per stage


@dataclass(frozen=True)
class Levels:
    """How the panes read a structure's text: per block, the fraction of heads and neurons kept."""

    heads: int
    mlp_levels: int

    def kept(self, text: str) -> tuple[list[float], list[float]]:
        attn, mlp = (part.split()[1:] for part in text.split("/"))
        return [1 - int(a) / self.heads for a in attn], [1 - int(m) / self.mlp_levels for m in mlp]


class Structured(Vertical):
    DEFAULT_CLASSES = "pane"

    def __init__(self, run: str, settings, validate: Callable[..., object]) -> None:
        """`settings`: the engine's StructuredSettings the form starts with; `validate(settings, **fields)`: those
        settings with the form's fields, or ValueError saying what is wrong (the engine's check)."""
        super().__init__()
        self.run = run
        self.settings = settings
        self.validate = validate
        self.levels: Levels | None = None
        self.stages: list[list] = []

    def compose(self) -> ComposeResult:
        p = self.settings
        yield Static("structured pruning: removes whole heads and MLP neurons", id="structured-status", markup=False)
        with Horizontal(classes="structured-row"):
            yield Label("run")
            yield TextBox(self.run, id="structured-run")
            yield Label("keep")
            yield TextBox(str(p.target), id="structured-target")
            yield Label("generations")
            yield TextBox(str(p.generations), id="structured-generations")
            yield Label("offspring")
            yield TextBox(str(p.offspring), id="structured-offspring")
        with Horizontal(classes="structured-row"):
            yield Label("stages")
            yield TextBox(",".join(map(str, p.stages)), id="structured-stages")
            yield Label("lr")
            yield TextBox(str(p.lr), id="structured-lr")
            yield Checkbox("one-shot", p.one_shot, id="structured-one-shot")
            yield Button("Start / resume", id="structured-start", variant="primary")
        with Horizontal(classes="structured-row"):
            yield Label("export to")
            yield TextBox("out/structured", id="structured-out")
            yield Label("fine-tune tokens")
            yield TextBox("0", id="structured-finetune")
            yield Checkbox("replace", id="structured-force")
            yield Button("Export", id="structured-export")
        with Horizontal(id="structured-body"):
            yield DataTable(id="stage-table", cursor_type="row")
            yield LivePlot("Kept per block (fraction)", "block", "kept", id="kept-plot")

    def on_mount(self) -> None:
        self.query_one("#stage-table", DataTable).add_columns(*STAGE_COLUMNS)

    def read_settings(self) -> tuple[str, object] | None:
        """The run folder and the settings of the form, or None (with a notification) when they are invalid."""
        value = lambda name: self.query_one(f"#structured-{name}", Input).value.strip()  # noqa: E731
        try:
            settings = self.validate(self.settings, target=float(value("target")),
                                     generations=int(value("generations")), offspring=int(value("offspring")),
                                     stages=value("stages"), lr=float(value("lr")),
                                     one_shot=self.query_one("#structured-one-shot", Checkbox).value)
        except ValueError as exc:
            self.notify(f"structured settings: {exc}", severity="error")
            return None
        return value("run"), settings

    @on(Button.Pressed, "#structured-start")
    def _start(self) -> None:
        chosen = self.read_settings()
        if chosen is not None:
            self.post_message(StructuredStartRequested(*chosen))

    @on(Button.Pressed, "#structured-export")
    def _export(self) -> None:
        try:
            tokens = int(self.query_one("#structured-finetune", Input).value.strip())
        except ValueError:
            self.notify("fine-tune tokens must be a whole number", severity="error")
            return
        chosen = self.read_settings()
        if chosen is not None:
            self.post_message(StructuredExportRequested(*chosen, self.query_one("#structured-out", Input).value.strip(),
                                                        tokens, self.query_one("#structured-force", Checkbox).value))

    # -- updates from the App ------------------------------------------------------------------
    def set_status(self, text: str) -> None:
        self.query_one("#structured-status", Static).update(text)

    def set_levels(self, levels: Levels, stages: list[tuple[int, int, int]], offspring: int) -> None:
        """A search opened: its level grid and stages (survivors, fine-tune tokens, fitness tokens)."""
        self.levels = levels
        self.stages = []
        sizes = [offspring + 1] + [s[0] for s in stages[:-1]]
        for i, ((survivors, finetune, fitness), size) in enumerate(zip(stages, sizes)):
            self.stages.append([i + 1, size, survivors, finetune, fitness, 0, "-"])
        self._show_stages()

    def new_generation(self) -> None:
        for row in self.stages:
            row[5], row[6] = 0, "-"
        self._show_stages()

    def candidate_scored(self, stage: int, text: str, fitness: float | None) -> None:
        """A candidate evaluated at `stage`: scored, or rejected (fitness None, a fine-tune that diverged, say)."""
        if stage < len(self.stages):
            row = self.stages[stage]
            row[5] += 1
            if fitness is not None:
                row[6] = f"{fitness:.5f}" if row[6] == "-" else f"{min(float(row[6]), fitness):.5f}"
            self._show_stages()
        self.show_structure("candidate", text)

    def show_structure(self, label: str, text: str) -> None:
        if self.levels is None:
            return
        heads, neurons = self.levels.kept(text)
        plot = self.query_one("#kept-plot", LivePlot)
        plot.set_series(f"heads ({label})", range(len(heads)), heads)
        plot.set_series(f"neurons ({label})", range(len(neurons)), neurons)

    def _show_stages(self) -> None:
        table = self.query_one("#stage-table", DataTable)
        table.clear()
        for row in self.stages:
            table.add_row(*(str(v) for v in row))
