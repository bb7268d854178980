"""The App's key bindings: the search keys, the pane keys (letters and F-keys) and where each pane puts the focus."""

from __future__ import annotations

from textual.binding import Binding

# pane: (letter, F-key, title, tooltip, the widget that takes the focus there)
PANES = {
    "dashboard": ("d", "f2", "Dashboard", "Plots and status", None),
    "leaderboard": ("l", "f3", "Leaderboard", "Scored candidates", "#leaderboard-table"),
    "editor": ("e", "f4", "Editor", "Build or edit a function", "#function-input"),
    "compare": ("c", "f5", "Compare", "Allocations side by side", "#compare-table"),
    "export": ("x", "f6", "Export", "Write a pruned model", "#export-method"),
    "structured": ("u", "f7", "Structured", "Structured pruning: heads and neurons (s/p/r/n/t drive its search there)",
                   "#structured-start"),
}


def pane_bindings() -> list[Binding]:
    """Priority bindings: the App switches the pane and moves the focus before it reads the next key, so keys typed
    right after the switch land in the new pane. Where a text box has the focus, Textual leaves it the letters (the
    F-keys still switch)."""
    return [Binding(f"{letter},{fkey}", f"pane('{pane}')", title, id=f"pane.{pane}", tooltip=tooltip, show=False,
                    priority=True) for pane, (letter, fkey, title, tooltip, _) in PANES.items()]


APP_BINDINGS = [
    Binding("s", "search('start')", "Start", id="search.start", tooltip="Start (or resume) the search"),
    Binding("p", "search('pause')", "Pause", id="search.pause", tooltip="Pause the search"),
    Binding("r", "search('resume')", "Resume", id="search.resume", tooltip="Resume the paused search"),
    Binding("n", "search('step')", "Step", id="search.step", tooltip="Evaluate one candidate, then pause"),
    Binding("t", "search('stop')", "Stop", id="search.stop", tooltip="Stop the search (checkpoint kept)"),
    Binding("o", "settings", "Settings", id="settings", tooltip="Target sparsity, metric, population..."),
    Binding("W", "report", "Report", id="report", tooltip="Write the search run's report (report.md and PNG figures) "
            "beside its folder", show=False),
    Binding("question_mark,f1", "help", "Help", id="help", tooltip="Every key binding"),
    Binding("q,ctrl+q", "quit", "Quit", id="quit", tooltip="Quit (a running search stops, checkpoint kept)"),
    *pane_bindings(),
    # Tab moves the focus before the next key is read (a priority binding): text typed right after it
    # lands in the widget it moved to, however busy the machine
    Binding("tab", "focus_next", "Next field", id="focus.next", tooltip="Move the focus to the next widget",
            show=False, priority=True),
    Binding("shift+tab", "focus_previous", "Previous field", id="focus.previous",
            tooltip="Move the focus to the previous widget", show=False, priority=True),
]


def help_sections() -> dict[str, list[Binding]]:
    """The help screen's sections: the App's keys, then the keys of the panes that have their own."""
    from screens.compare import Compare
    from screens.editor import Editor, StageView
    from screens.leaderboard import Leaderboard

    sections = {"Everywhere (letters type into text boxes: F-keys switch panes there)": APP_BINDINGS}
    for widget in (Leaderboard, Editor, Compare):
        sections[widget.__name__] = list(widget.BINDINGS)
    sections["Editor ops (focus the op list)"] = list(StageView.BINDINGS)
    return sections
