"""Export: choose a function, an output folder and a dtype; prune and write a safetensors folder (or write the
allocation as an llm-compressor recipe)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, Select, Static

from engine.choices import EXPORT_DTYPES, EXPORT_FORMATS, RECIPE_EXPORT
from screens.messages import ExportDone, ExportProgressed, ExportRequested
from screens.text_box import TextBox

LABELS = {"keep": "keep the model's dtype", "dense": "dense safetensors",
          "compressed-tensors": "compressed-tensors (sparse)", RECIPE_EXPORT: "llm-compressor recipe (.yaml)"}
DTYPES = [(LABELS.get(d, d), d) for d in EXPORT_DTYPES]
FORMATS = [(LABELS.get(f, f), f) for f in (*EXPORT_FORMATS, RECIPE_EXPORT)]
MODEL_OUT, RECIPE_OUT = "out/pruned", "out/recipe.yaml"  # the default output of a model folder and of a recipe


class Export(Vertical):
    DEFAULT_CLASSES = "pane"

    def compose(self) -> ComposeResult:
        yield Label("Allocation (a method name, or a function's text form)")
        yield TextBox(value="owl", id="export-method")
        yield Label("Output folder (a .yaml file for a recipe)")
        yield TextBox(value=MODEL_OUT, id="export-out")
        with Horizontal(id="export-options"):
            yield Select(FORMATS, value="dense", allow_blank=False, id="export-format")
            yield Select(DTYPES, value="keep", allow_blank=False, id="export-dtype")
            yield Checkbox("replace an existing folder", id="export-force")
            yield Button("Export", id="export-button", variant="primary")
        with Horizontal(id="export-status"):
            yield ProgressBar(id="export-progress", show_eta=False)
            yield Static("", id="export-stage", markup=False)
        yield Static("", id="export-result", markup=False)

    @on(Select.Changed, "#export-format")
    def format_changed(self, event: Select.Changed) -> None:
        """A recipe is one .yaml file in no dtype: the default output follows the format, the dtype is greyed."""
        recipe = event.value == RECIPE_EXPORT
        out = self.query_one("#export-out", Input)
        if out.value.strip() == (MODEL_OUT if recipe else RECIPE_OUT):
            out.value = RECIPE_OUT if recipe else MODEL_OUT
        self.query_one("#export-dtype", Select).disabled = recipe

    def use_function(self, text: str) -> None:
        self.query_one("#export-method", Input).value = text

    @on(Button.Pressed, "#export-button")
    @on(Input.Submitted, "#export-out")
    def start(self) -> None:
        """Ask for an export (one at a time: the button stays disabled until its result comes)."""
        method = self.query_one("#export-method", Input).value.strip()
        out = self.query_one("#export-out", Input).value.strip()
        if self.query_one("#export-button", Button).disabled:  # Enter in the output box while one runs
            self.notify("an export is still running", severity="warning")
            return
        if not method or not out:
            self.notify("choose an allocation and an output folder", severity="warning")
            return
        self.query_one("#export-button", Button).disabled = True
        self.query_one("#export-result", Static).update(f"exporting {method} to {out}…")
        self.post_message(ExportRequested(method, out, self.query_one("#export-format", Select).value,
                                          self.query_one("#export-dtype", Select).value,
                                          self.query_one("#export-force", Checkbox).value))

    def show_progress(self, message: ExportProgressed) -> None:
        """The stage in words (calibration in tokens, pruning in blocks, verification in tensors) and its bar."""
        self.query_one("#export-progress", ProgressBar).update(total=message.total, progress=message.done)
        self.query_one("#export-stage", Static).update(f"{message.stage}: {message.done:,} of {message.total:,}")

    def show_result(self, message: ExportDone) -> None:
        self.query_one("#export-button", Button).disabled = False
        text = f"written: {message.path}" if message.error is None else f"export failed: {message.error}"
        self.query_one("#export-result", Static).update(text)
