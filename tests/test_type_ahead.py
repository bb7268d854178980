"""Type-ahead: keys that reach the app in one burst (as a terminal delivers them when typed fast, pasted, or on a
busy machine) land, in order, in the widget that has the focus once the keys before them are handled.

The keys go to the driver back to back, with no pause for the app to handle one before the next arrives (Pilot's
`press` waits after every key and would hide the bug)."""

from __future__ import annotations

import threading

from textual import events

from fake_engine import FakeAPI
from screens.editor import Editor
from screens.messages import CandidateSelected
from workbench.contract import ScoredCandidate
from waiting import scaled
from workbench.app import AppConfig, make_app

SIZE = (120, 40)
CHARACTERS = {" ": "space", "|": "vertical_line", "/": "slash", ".": "full_stop", "-": "minus", "_": "underscore"}


class typed(str):
    """Text typed character by character (a plain argument of `burst` is one key's name)."""


def burst(app, *keys: str) -> None:
    for key in keys:
        for name, char in ([(CHARACTERS.get(c, c), c) for c in key] if isinstance(key, typed)
                           else [(key, key if len(key) == 1 else None)]):
            event = events.Key(name, char)
            event.set_sender(app)
            app._driver.send_message(event)


async def ready(pilot, app) -> None:
    while app.info is None or "ready" not in app.status_text:
        await pilot.pause(0.02)


async def settled(pilot, app, predicate, timeout: float = 10.0) -> bool:
    for _ in range(int(scaled(timeout) / 0.02)):
        if predicate():
            return True
        await pilot.pause(0.02)
    return predicate()


def text_of(app, widget_id: str) -> str:
    return app.query_one(widget_id).value


async def test_a_pane_key_ctrl_u_and_text_in_one_burst_fill_the_editor():
    """The reported loss: e, ctrl+u and a function typed at once. ctrl+u used to be applied after the text
    (an empty box, "empty allocation function"), and letters typed before the focus moved started a search."""
    app = make_app(AppConfig(redraw_s=0.1), FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        burst(app, "e", "ctrl+u", typed("abs | var | tanh"))
        assert await settled(pilot, app, lambda: text_of(app, "#function-input") == "abs | var | tanh")
        await pilot.pause(0.2)
        editor = app.query_one(Editor)
        assert text_of(app, "#function-input") == "abs | var | tanh" and editor.error is None
        assert (editor.draft.pre, editor.draft.reduction, editor.draft.transform) == (["abs"], "var", ["tanh"])
        assert app.dsa.state == "idle"  # the s of "abs" was text, not the start key


async def test_tab_between_fields_splits_nothing():
    """F6, ctrl+u, a method, Tab, ctrl+u, a folder: each text in its own field, whole."""
    app = make_app(AppConfig(redraw_s=0.1), FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        burst(app, "f6", "ctrl+u", typed("uniform"), "tab", "ctrl+u", typed("/tmp/typed/fast"))
        assert await settled(pilot, app, lambda: text_of(app, "#export-out") == "/tmp/typed/fast")
        await pilot.pause(0.2)
        assert text_of(app, "#export-method") == "uniform" and text_of(app, "#export-out") == "/tmp/typed/fast"
        burst(app, "shift+tab", typed("owl"))  # back: tabbing into a field selects its text, typing replaces it
        assert await settled(pilot, app, lambda: text_of(app, "#export-method") == "owl")


async def test_editing_keys_keep_their_place_among_the_characters():
    app = make_app(AppConfig(redraw_s=0.1), FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        burst(app, "f4", "ctrl+u", typed("abs | varx"), "backspace", typed(" | tanh"), "home", "ctrl+k", typed("mean"))
        assert await settled(pilot, app, lambda: text_of(app, "#function-input") == "mean")
        burst(app, "ctrl+u", typed("abs | var"), "left", "left", "left", "ctrl+k", typed("std"))
        assert await settled(pilot, app, lambda: text_of(app, "#function-input") == "abs | std")


async def test_escape_then_a_pane_letter_leaves_the_text_untouched():
    app = make_app(AppConfig(redraw_s=0.1), FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        burst(app, "e", "ctrl+u", typed("abs | var"), "escape", "d")
        assert await settled(pilot, app, lambda: text_of(app, "#function-input") == "abs | var"
                             and app.query_one("#panes").active == "dashboard" and app.focused is None)


async def test_a_late_distilled_function_never_replaces_what_was_typed_meanwhile():
    gate = threading.Event()

    class SlowDistill(FakeAPI):
        def distill(self, profile, sparsity, metric):
            gate.wait(30)
            return super().distill(profile, sparsity, metric)

    app = make_app(AppConfig(redraw_s=0.1), SlowDistill())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        profile = ScoredCandidate(0, 0, "profile:" + ",".join(["0.7"] * 12), 50.0, (0.7,) * 12, 0.1)
        app.post_message(CandidateSelected(profile))
        await pilot.pause(0.1)
        burst(app, "e", "ctrl+u", typed("abs | var"))
        assert await settled(pilot, app, lambda: text_of(app, "#function-input") == "abs | var")
        gate.set()
        assert await settled(pilot, app, lambda: any("keeps what you typed" in n.message for n in app._notifications))
        assert text_of(app, "#function-input") == "abs | var"


async def test_an_op_edit_is_refused_while_the_box_holds_unfinished_text():
    app = make_app(AppConfig(redraw_s=0.1), FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, app)
        burst(app, "e", "ctrl+u", typed("abs | var | ta"), "ctrl+r")
        assert await settled(pilot, app, lambda: any("finish or clear" in n.message for n in app._notifications))
        assert text_of(app, "#function-input") == "abs | var | ta"
        burst(app, "n", "ctrl+r")  # a whole function again: the edit applies to it
        assert await settled(pilot, app, lambda: text_of(app, "#function-input") == "abs | var | tan | dir=-")
