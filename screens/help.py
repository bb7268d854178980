"""Help: every key binding of the app and of each pane."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: dict[str, list[Binding]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        lines = ["dsa-workbench keys  (ctrl+p: command palette; escape closes this)", ""]
        for title, bindings in self.sections.items():
            lines.append(title)
            for b in bindings:
                lines.append(f"  {b.key:<22} {b.description:<16} {b.tooltip}")
            lines.append("")
        with VerticalScroll(id="help-body"):
            yield Static("\n".join(lines), id="help-text", markup=False)
