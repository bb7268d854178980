"""The app's tabbed panes, following the focus only while it is really there.

Textual's TabbedContent shows the pane that holds the focus, told by a message the pane posts when one of its
widgets is focused. That message is handled after the keys typed behind it: `e` then `F2` at once showed the
editor again, with the focus back in its text box. Here a pane is shown for the focus only if the focus is
still in it. Showing a pane (a pane key, a click on its tab) moves the focus to the widget where its keys work."""

from __future__ import annotations

from textual import on
from textual.widgets import TabbedContent, TabPane


class Panes(TabbedContent):
    def __init__(self, focus_targets: dict[str, str | None], **kwargs) -> None:
        """`focus_targets`: pane id -> the selector of the widget that takes the focus there (None: nothing)."""
        super().__init__(**kwargs)
        self.focus_targets = focus_targets

    def show(self, pane: str) -> None:
        """Show the pane and focus where its keys work, now: the next key read goes there. (Where the pane has
        nothing to focus the focus leaves the old pane, whose hidden text box would otherwise take keys.)"""
        self.active = pane
        target = self.focus_targets[pane]
        self.screen.set_focus(self.query_one(target) if target else None)

    @on(TabbedContent.TabActivated)
    def _focus_pane(self, event: TabbedContent.TabActivated) -> None:
        """A tab clicked with the mouse: focus the pane's main widget. Not for a pane already left again, nor when
        the focus is in the pane already (a pane key put it there, and the user may have moved it since)."""
        target = self.focus_targets[event.pane.id]
        focused = self.screen.focused
        if target and self.active == event.pane.id and not (focused is not None and event.pane in focused.ancestors):
            self.screen.set_focus(self.query_one(target))

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        focused = self.screen.focused
        if focused is None or event.tab_pane not in focused.ancestors:
            event.stop()
            event.prevent_default()  # TabbedContent's own handler would show the pane
