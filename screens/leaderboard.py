"""Leaderboard: every scored candidate, sortable, with a sparkline of its per-block ratios.

A candidate scored again at a later selection stage replaces its row; fitness from a cheap stage
(fewer tokens) is marked with the stage and sorts after every entry scored on the whole fitness split."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from screens.messages import CandidateSelected
from workbench.contract import ScoredCandidate
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
        table.add_column("by", key="strategy")
        table.add_column("stage", key="stage")
        table.add_column("fitness", key="fitness")
        table.add_column("ratios", key="ratios")
        table.add_column("function", key="text")
        yield table

    def add(self, candidate: ScoredCandidate) -> None:
        known = self.candidates.get(candidate.text)
        if candidate.fitness is None or known is not None and known.stage >= candidate.stage:
            return
        self.candidates[candidate.text] = candidate
        table = self.query_one(DataTable)
        if known is not None:
            table.remove_row(candidate.text)
        stage = "final" if candidate.final else f"{candidate.stage + 1} (cheap)"
        counted = lambda n: str(n + 1) if n >= 0 else "-"  # noqa: E731 - from 1, as the status line; "-": the editor's
        table.add_row(counted(candidate.index), counted(candidate.generation), candidate.strategy, stage,
                      f"{candidate.fitness:.3f}", sparkline(candidate.ratios), Text(candidate.text), key=candidate.text)
        self.query_one("#leaderboard-hint").display = False
        self._sort()

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self._sort()
        self.notify(f"sorted by {self.sort_by}")

    def _sort(self) -> None:
        table = self.query_one(DataTable)
        if self.sort_by == "fitness":
            table.sort("stage", "fitness", key=lambda row: (row[0] != "final", float(row[1])))
        else:
            table.sort("index", key=lambda number: int(number) if number != "-" else 0)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(CandidateSelected(self.candidates[event.row_key.value]))
