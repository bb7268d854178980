"""Function editor: build an allocation function from the op palette or type its text form.

The ratio plot follows every edit (a preview from cached block samples, no model forward);
invalid functions show why, inline. Keys evaluate the function (leaderboard) or seed the search."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from screens.function_draft import FunctionDraft
from screens.messages import EvaluateRequested, PreviewReady, PreviewRequested, SeedRequested
from screens.plots import LivePlot
from screens.text_box import TextBox


class StageView(Static, can_focus=True):
    """The function's ops in order with a cursor; keys edit the op under the cursor."""

    BINDINGS = [
        Binding("left", "cursor(-1)", "Prev op", show=False, id="editor.prev"),
        Binding("right", "cursor(1)", "Next op", show=False, id="editor.next"),
        Binding("delete,backspace", "remove", "Delete op", id="editor.delete", tooltip="Remove the op under the cursor"),
        Binding("[", "move(-1)", "Move left", id="editor.move_left", tooltip="Move the op earlier in its stage"),
        Binding("]", "move(1)", "Move right", id="editor.move_right", tooltip="Move the op later in its stage"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cursor = 0

    def show(self, draft: FunctionDraft) -> None:
        slots = draft.slots()
        self.cursor = min(self.cursor, len(slots) - 1)
        parts = {"pre": [], "reduction": [], "transform": []}
        for k, slot in enumerate(slots):
            op = draft.op_at(slot)
            parts[slot[0]].append(f"[reverse]{op}[/]" if k == self.cursor else op)
        sign = "+" if draft.direction > 0 else "-"
        self.update(f"pre-process: {' '.join(parts['pre']) or '—'}\n"
                    f"reduction:   {' '.join(parts['reduction'])}\n"
                    f"transform:   {' '.join(parts['transform']) or '—'}\n"
                    f"lam {draft.lam:g}   direction {sign}  (higher value → {'more' if sign == '+' else 'less'} sparsity)")

    def action_cursor(self, delta: int) -> None:
        self.parent_editor().move_cursor(delta)

    def action_remove(self) -> None:
        self.parent_editor().remove_op()

    def action_move(self, delta: int) -> None:
        self.parent_editor().move_op(delta)

    def parent_editor(self) -> Editor:
        return self.query_ancestor(Editor)


class Editor(Vertical):
    DEFAULT_CLASSES = "pane"
    BINDINGS = [
        Binding("ctrl+r", "flip", "Direction", id="editor.flip", tooltip="Flip the direction of the mapping"),
        Binding("ctrl+up", "lam(1)", "lam +", id="editor.lam_up", tooltip="Raise lam by 0.01"),
        Binding("ctrl+down", "lam(-1)", "lam −", id="editor.lam_down", tooltip="Lower lam by 0.01"),
        Binding("ctrl+o", "evaluate", "Evaluate", id="editor.evaluate",
                tooltip="Score the function on the fitness split and add it to the leaderboard"),
        Binding("ctrl+g", "seed", "Seed search", id="editor.seed",
                tooltip="Put the function into the next search's first population"),
        # a priority binding: the focus moves before the next key is read, so letters typed right after escape
        # are keys again, not text
        Binding("escape", "leave_input", "Leave text", id="editor.leave", show=False, priority=True,
                tooltip="Move the focus from the text box to the op list (letter keys work again)"),
    ]

    def __init__(self, palette: dict[str, list[str]], parse, format_, **kwargs) -> None:
        """`parse(text) -> fields` and `format_(fields) -> text` come from the engine API (both raise ValueError)."""
        super().__init__(**kwargs)
        self.palette = palette
        self.parse = parse
        self.format = format_
        self.draft = FunctionDraft(pre=["abslog"], reduction="var", transform=["atan", "asin"])
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield TextBox(placeholder="pre-process | reduction | transform [| lam=0.08] [| dir=-]", id="function-input")
        yield Static("", id="function-error", markup=False)
        with Horizontal(id="editor-body"):
            options = []
            for stage, ops in self.palette.items():
                options.append(Option(f"── {stage} ──", disabled=True))
                options += [Option(f"{stage}: {op}", id=f"{stage}:{op}") for op in ops]
            yield OptionList(*options, id="palette")
            with Vertical(id="editor-right"):
                yield StageView(id="stages")
                yield LivePlot("Per-block sparsity (preview)", "block", "sparsity", id="preview-plot")

    def on_mount(self) -> None:
        self._sync_from_draft()

    @property
    def text(self) -> str:
        return self.query_one("#function-input", Input).value.strip()

    def set_text(self, text: str, replacing: str | None = None) -> bool:
        """Load a function (e.g. from the leaderboard) into the editor. With `replacing` (the text when the function
        was asked for), only if the editor still holds it: a late result never overwrites what was typed since."""
        box = self.query_one("#function-input", Input)
        if replacing is not None and box.value.strip() != replacing:
            return False
        box.value = text
        return True

    # -- edits --------------------------------------------------------------------------------
    @on(Input.Changed, "#function-input")
    def _typed(self, event: Input.Changed) -> None:
        try:
            fields = self.parse(event.value)
        except ValueError as exc:
            self._show_error(str(exc))
            return
        self.draft = FunctionDraft.from_fields(fields)
        self.query_one(StageView).show(self.draft)
        self._show_error(None)
        self.post_message(PreviewRequested(event.value.strip()))

    @on(OptionList.OptionSelected, "#palette")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        stage, op = event.option.id.split(":", 1)
        self._edit(lambda draft: draft.add(stage, op))

    def move_cursor(self, delta: int) -> None:
        view = self.query_one(StageView)
        view.cursor = max(0, min(len(self.draft.slots()) - 1, view.cursor + delta))
        view.show(self.draft)

    def remove_op(self) -> None:
        def remove(draft: FunctionDraft) -> None:
            if not draft.remove(draft.slots()[self.query_one(StageView).cursor]):
                self.notify("a function has exactly one reduction: pick another from the palette to replace it")

        self._edit(remove)

    def move_op(self, delta: int) -> None:
        def move(draft: FunctionDraft) -> None:
            view = self.query_one(StageView)
            view.cursor = draft.slots().index(draft.move(draft.slots()[view.cursor], delta))

        self._edit(move)

    def action_leave_input(self) -> None:
        self.screen.set_focus(self.query_one(StageView))

    def action_flip(self) -> None:
        self._edit(FunctionDraft.flip)

    def action_lam(self, steps: int) -> None:
        self._edit(lambda draft: draft.nudge_lam(steps))

    def _edit(self, change) -> None:
        """An op edit (palette, op list, direction, lam) of the function in the text box as it is now, written back
        to the box. Refused while the box holds unfinished text, which it would overwrite."""
        if self.text:
            try:
                self.draft = FunctionDraft.from_fields(self.parse(self.text))
            except ValueError as exc:
                self.notify(f"finish or clear the text first: {exc}", severity="warning")
                return
        change(self.draft)
        self._sync_from_draft()

    def action_evaluate(self) -> None:
        if self.error is None and self.text:
            self.post_message(EvaluateRequested(self.text))
            self.notify(f"evaluating {self.text}")
        else:
            self.notify(self.error or "type or build a function first", severity="warning")

    def action_seed(self) -> None:
        if self.error is None and self.text:
            self.post_message(SeedRequested(self.text))
        else:
            self.notify(self.error or "type or build a function first", severity="warning")

    def _sync_from_draft(self) -> None:
        try:
            text = self.format(self.draft.fields())
        except ValueError as exc:
            self._show_error(str(exc))
            return
        self.query_one("#function-input", Input).value = text  # triggers parse + preview
        self.query_one(StageView).show(self.draft)

    # -- results --------------------------------------------------------------------------------
    def show_preview(self, message: PreviewReady) -> None:
        if message.text != self.text:
            return  # an older edit
        plot = self.query_one("#preview-plot", LivePlot)
        if message.error is not None:
            self._show_error(message.error)
            plot.clear_series("ratios")
            return
        self._show_error(None)
        plot.set_series("ratios", range(len(message.view.block_ratios)), message.view.block_ratios)
        plot.redraw_if_dirty()

    def _show_error(self, error: str | None) -> None:
        self.error = error
        widget = self.query_one("#function-error", Static)
        widget.update(f"invalid: {error}" if error else "")
        widget.set_class(error is not None, "error")
