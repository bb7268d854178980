"""Leaderboard: every scored candidate, sortable, with a sparkline of its per-block ratios."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from screens.messages import CandidateSelected, ScoredCandidate
from screens.sparkline import sparkline

SORTS = ("fitness", "index")


class Leaderboard(Vertical):
    DEFAULT_CLASSES = "pane"
    BINDINGS = [
        Binding("f", "cycle_sort", "Sort", id="leaderboard.sort", tooltip="Sort by fitness or by arrival"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.candidates: dict[str, ScoredCandidate] = {}
        self.sort_by = "fitness"

    def compose(self) -> ComposeResult:
        yield Static("No candidates yet: start a search (s) or evaluate a function in the editor.",
                     id="leaderboard-hint")
        table = DataTable(id="leaderboard-table", cursor_type="row", zebra_stripes=True)
        table.add_column("#", key="index")
        table.add_column("gen", key="generation")
        table.add_column("fitness", key="fitness")
        table.add_column("ratios", key="ratios")
        table.add_column("function", key="text")
        yield table

    def add(self, candidate: ScoredCandidate) -> None:
        if candidate.fitness is None or candidate.text in self.candidates:
            return
        self.candidates[candidate.text] = candidate
        table = self.query_one(DataTable)
        table.add_row(str(candidate.index), str(candidate.generation), f"{candidate.fitness:.3f}",
                      sparkline(candidate.ratios), Text(candidate.text), key=candidate.text)
        self.query_one("#leaderboard-hint").display = False
        self._sort()

    def best(self) -> ScoredCandidate | None:
        return min(self.candidates.values(), key=lambda c: c.fitness, default=None)

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self._sort()
        self.notify(f"sorted by {self.sort_by}")

    def _sort(self) -> None:
        table = self.query_one(DataTable)
        if self.sort_by == "fitness":
            table.sort("fitness", key=float)
        else:
            table.sort("index", key=int)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(CandidateSelected(self.candidates[event.row_key.value]))
