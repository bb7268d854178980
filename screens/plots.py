"""Plot widgets that keep only their newest data and redraw when the App's timer asks, if visible."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LivePlot(PlotextPlot):
    """A plotext plot with named series. `set_series` only stores data; `redraw_if_dirty` draws it."""

    def __init__(self, title: str, xlabel: str, ylabel: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.xlabel = xlabel
        self.ylabel = ylabel
        self._series: dict[str, tuple[list[float], list[float], str]] = {}
        self._dirty = True
        self.redraws = 0

    def set_series(self, name: str, xs, ys, marker: str = "braille") -> None:
        """`marker`: plotext's (braille dots) or one character, which tells series apart without colour."""
        self._series[name] = (list(xs), list(ys), marker)
        self._dirty = True

    def clear_series(self, name: str) -> None:
        if self._series.pop(name, None) is not None:
            self._dirty = True

    def redraw_if_dirty(self) -> bool:
        """Redraw at most once per call, only when there is new data and the plot is on screen."""
        if not self._dirty or not self.is_on_screen:
            return False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel(self.xlabel)
        plt.ylabel(self.ylabel)
        for name, (xs, ys, marker) in self._series.items():
            if xs:
                plt.plot(xs, ys, label=name, marker=marker)
        self._dirty = False
        self.redraws += 1
        self.refresh()
        return True
