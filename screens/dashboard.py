"""Dashboard: per-block importance and sparsity, fitness per generation, and the status line."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from workbench.contract import AllocationView
from screens.plots import LivePlot


class Dashboard(Vertical):
    DEFAULT_CLASSES = "pane"

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="status-line", markup=False)
        with Horizontal(id="dashboard-top"):
            yield LivePlot("Per-block importance (min-max scaled)", "block", "value", id="importance-plot")
            yield LivePlot("Per-block sparsity", "block", "sparsity", id="sparsity-plot")
        yield LivePlot("Fitness per generation (lower is better)", "generation", "fitness", id="fitness-plot")

    def plots(self) -> list[LivePlot]:
        return list(self.query(LivePlot))

    def set_status(self, text: str) -> None:
        for line in self.query("#status-line"):  # none while the app shuts down
            line.update(text)

    def show_allocation(self, label: str, view: AllocationView) -> None:
        """Plot `view`'s ratios under `label` (e.g. 'best', 'uniform', 'selected'), and its values if any. An
        allocation with attention and MLP apart is two series, drawn with the letters A and M."""
        xs = range(len(view.block_ratios))
        plot = self.query_one("#sparsity-plot", LivePlot)
        if view.group_ratios is None:
            plot.clear_series(f"{label} attention (A)")
            plot.clear_series(f"{label} MLP (M)")
            plot.set_series(label, xs, view.block_ratios)
        else:
            plot.clear_series(label)
            plot.set_series(f"{label} attention (A)", xs, view.group_ratios[0], marker="A")
            plot.set_series(f"{label} MLP (M)", xs, view.group_ratios[1], marker="M")
        if view.block_values is not None and label in ("best", "selected", "editor"):
            self.show_importance(label, view.block_values)

    def show_importance(self, label: str, values) -> None:
        """Per-block values on one scale: min-max scaled, as the allocation mapping sees them."""
        lo, hi = min(values), max(values)
        scaled = [(v - lo) / (hi - lo) if hi > lo else 0.5 for v in values]
        self.query_one("#importance-plot", LivePlot).set_series(label, range(len(values)), scaled)

    def show_fitness(self, generations: list[int], best: list[float], median: list[float]) -> None:
        plot = self.query_one("#fitness-plot", LivePlot)
        plot.set_series("best", generations, best)
        plot.set_series("median", generations, median)
