"""Compare: held-out perplexity of the classic allocations, the protect-first baselines, the published DSA
function and any leaderboard entry, evaluated on demand, with a column of zero-shot accuracy per task named in
the settings. A new target or metric in the settings makes every score stale: evaluating again shows each
entry transferred there (a profile moves by one shift)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.choices import METHOD_LABELS, REFERENCE_DSA_LABEL, REFERENCE_DSA_TEXT
from engine.zeroshot import task_name
from screens.messages import CompareDone, CompareProgressed, CompareRequested


class Compare(Vertical):
    DEFAULT_CLASSES = "pane"
    BINDINGS = [
        Binding("a", "evaluate_all", "Evaluate all", id="compare.all", tooltip="Evaluate every row not yet scored"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.tasks: tuple[str, ...] = ()  # column keys of the zero-shot tasks shown

    def compose(self) -> ComposeResult:
        yield Static("Held-out perplexity (and zero-shot accuracy, % of the tasks in settings) at the current target "
                     "sparsity and metric (enter: evaluate row; another target or metric in settings (o) transfers "
                     "every row).", id="compare-hint")
        table = DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        table.add_column("allocation", key="label")
        table.add_column("held-out perplexity", key="ppl")
        table.add_column("method", key="method")
        for method, label in METHOD_LABELS.items():
            table.add_row(label, "—", method, key=method)
        table.add_row(REFERENCE_DSA_LABEL, "—", REFERENCE_DSA_TEXT, key=REFERENCE_DSA_TEXT)
        yield table

    def add_function(self, text: str) -> None:
        table = self.query_one(DataTable)
        if text not in table.rows:
            table.add_row("leaderboard", "—", Text(text), key=text)

    def set_tasks(self, tasks: tuple[str, ...]) -> None:
        """One column per zero-shot task (settings changed them): every score is stale."""
        names = tuple(task_name(t) for t in tasks)
        if names == self.tasks:
            return
        table = self.query_one(DataTable)
        for name in self.tasks:
            table.remove_column(f"task:{name}")
        for name in names:
            table.add_column(name, key=f"task:{name}", default="—")
        self.tasks = names
        self.reset()

    def reset(self) -> None:
        """Targets changed: every score is stale."""
        table = self.query_one(DataTable)
        for key in table.rows:
            for column in ("ppl",) + tuple(f"task:{name}" for name in self.tasks):
                table.update_cell(key, column, "—")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on a row: evaluate it."""
        event.stop()
        self._request(event.row_key.value)

    def action_evaluate_all(self) -> None:
        table = self.query_one(DataTable)
        for key in list(table.rows):
            if table.get_cell(key, "ppl") == "—":
                self._request(key.value)

    def _request(self, method: str) -> None:
        self.query_one(DataTable).update_cell(method, "ppl", "evaluating…")
        self.post_message(CompareRequested(method))

    def show_progress(self, message: CompareProgressed) -> None:
        table = self.query_one(DataTable)
        if message.method in table.rows and message.task in self.tasks:
            table.update_cell(message.method, f"task:{message.task}", f"{message.done}/{message.total}")

    def show_result(self, message: CompareDone) -> None:
        text = Text(f"{message.perplexity:.3f}" if message.error is None else f"rejected: {message.error}")
        table = self.query_one(DataTable)
        if message.method not in table.rows:
            return
        table.update_cell(message.method, "ppl", text)
        for name in self.tasks:
            score = message.zero_shot.get(name)
            cell = "—" if score is None else ("failed" if score["error"] else f"{100 * score['accuracy']:.1f}")
            table.update_cell(message.method, f"task:{name}", cell)
