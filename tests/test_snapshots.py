"""Snapshots of the main screens at 120x40 with the fake engine (no clocks or search running)."""

from __future__ import annotations

import time

from fake_engine import FakeAPI
from workbench.app import AppConfig, make_app

SIZE = (120, 40)


def ready_app():
    return make_app(AppConfig(redraw_s=0.05), FakeAPI())


async def freeze(pilot):
    """No blinking cursors: snapshots must not depend on when they are taken."""
    from textual.widgets import Input

    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause(0.1)


async def settle(pilot):
    app = pilot.app
    end = time.monotonic() + 5
    while time.monotonic() < end and not (app.dsa.state == "idle" and app.status_text.startswith("ready")):
        await pilot.pause(0.02)
    await pilot.pause(0.3)


def test_dashboard(snap_compare):
    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=settle)


def test_editor(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f4")
        pilot.app.query_one("#function-input").value = "abs | var | tanh | lam=0.12"
        await pilot.pause(0.5)
        await freeze(pilot)

    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=run_before)


def test_editor_invalid_function(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f4")
        pilot.app.query_one("#function-input").value = "abslog | var | atan, asin"
        await pilot.pause(0.5)
        await freeze(pilot)

    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=run_before)


def test_compare(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("c", "a")
        await pilot.pause(0.5)

    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=run_before)


def test_settings(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("o")
        await pilot.pause(0.2)
        await freeze(pilot)

    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=run_before)


def test_structured(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f7")
        pilot.app.query_one("#structured-stages").value = "2:1024:512,1:4096:2048"
        await pilot.press("s")
        end = time.monotonic() + 10
        while time.monotonic() < end and pilot.app.structured.state != "finished":
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        await freeze(pilot)

    assert snap_compare(ready_app(), terminal_size=SIZE, run_before=run_before)
