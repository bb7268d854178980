"""A text box that applies its own editing keys in the order they were typed.

Textual resolves a focused widget's key bindings only once the key has bubbled through every ancestor up to the
App, while it types printable characters at once, in the widget. Typed fast (type-ahead, a paste of keys, a
busy machine), ctrl+u, backspace or an arrow is then applied after the characters typed behind it: `ctrl+u`
then `abs | var` gave an empty box. A TextBox runs its own bindings when it reads the key, so every key it
owns keeps its place among the characters."""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class TextBox(Input):
    async def _on_key(self, event: events.Key) -> None:
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and self.check_action(binding.action.split("(")[0], ()) is not False:
                event.stop()
                event.prevent_default()
                await self.run_action(binding.action)
                return
        await super()._on_key(event)
