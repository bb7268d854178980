"""The app's tabbed panes, following the focus only while it is really there.

Textual's TabbedContent shows the pane that holds the focus, told by a message the pane posts when one of its
widgets is focused. That message is handled after the keys typed behind it: `e` then `F2` at once showed the
editor again, with the focus back in its text box. Here a pane is shown for the focus only if the focus is
still in it."""

from __future__ import annotations

from textual.widgets import TabbedContent, TabPane


class Panes(TabbedContent):
    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        focused = self.screen.focused
        if focused is None or event.tab_pane not in focused.ancestors:
            event.stop()
            event.prevent_default()  # TabbedContent's own handler would show the pane
