"""Plot widgets that keep only their newest data and redraw when the App's timer asks, if visible."""

from __future__ import annotations

import os

from textual_plotext import PlotextPlot

# Where colour is off (NO_COLOR), each series is drawn with its own character, named in the legend.
MARKERS = ("+", "x", "o", "*", "#", "%", "@", "=")


class LivePlot(PlotextPlot):
    """A plotext plot with named series. `set_series` only stores data; `redraw_if_dirty` draws it."""

    def __init__(self, title: str, xlabel: str, ylabel: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.xlabel = xlabel
        self.ylabel = ylabel
        self._series: dict[str, tuple[list[float], list[float], str | None]] = {}
        self._markers: dict[str, str] = {}  # each series' character under NO_COLOR, kept while the plot lives
        self._dirty = True
        self.redraws = 0

    def set_series(self, name: str, xs, ys, marker: str | None = None) -> None:
        """`marker`: one character that tells the series apart without colour, named in `name`; None: braille
        dots in colour, a character of its own under NO_COLOR."""
        self._series[name] = (list(xs), list(ys), marker)
        self._dirty = True

    def clear_series(self, name: str) -> None:
        if self._series.pop(name, None) is not None:
            self._dirty = True

    def legend(self) -> list[tuple[str, tuple[list[float], list[float]], str]]:
        """Each series as drawn: its label, its data and its marker."""
        no_color = bool(os.environ.get("NO_COLOR"))
        drawn = []
        for name, (xs, ys, marker) in self._series.items():
            if marker is None and no_color:
                marker = self._markers.setdefault(name, MARKERS[len(self._markers) % len(MARKERS)])
                name = f"{name} ({marker})"
            drawn.append((name, (xs, ys), marker or "braille"))
        return drawn

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
        for label, (xs, ys), marker in self.legend():
            if xs:
                plt.plot(xs, ys, label=label, marker=marker)
        self._dirty = False
        self.redraws += 1
        self.refresh()
        return True
