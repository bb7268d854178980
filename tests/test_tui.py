"""Pilot tests of every pane and binding, on the fake engine API."""

from __future__ import annotations

import sys
import time

import pytest

from fake_engine import FakeAPI
from screens.compare import Compare
from screens.dashboard import Dashboard
from screens.editor import Editor, StageView
from screens.export import Export
from screens.help import HelpScreen
from screens.leaderboard import Leaderboard
from screens.plots import LivePlot
from screens.settings import SettingsScreen
from screens.structured import Structured
from waiting import scaled
from workbench.app import AppConfig, make_app

SIZE = (120, 40)


def app_with(api=None, settings: dict | None = None, **config):
    """An app on the fake API (or `api`), its search settings changed by `settings`."""
    api = api or FakeAPI()
    if settings is not None:
        config["settings"] = api.search_settings(**settings)
    return make_app(AppConfig(redraw_s=config.pop("redraw_s", 0.1), **config), api)


async def wait_until(pilot, predicate, timeout=5.0):
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        if predicate():
            return True
        await pilot.pause(0.02)
    return False


async def test_loads_then_shows_baselines_and_status():
    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: app.info is not None)
        plot = app.query_one("#sparsity-plot", LivePlot)
        assert await wait_until(pilot, lambda: {"uniform", "owl"} <= set(plot._series))
        assert "fake-llama" in app.status_line() and "target 0.7" in app.status_line()


async def test_without_colour_every_series_has_its_own_character_named_in_the_legend(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        plot = app.query_one("#sparsity-plot", LivePlot)
        assert await wait_until(pilot, lambda: {"uniform", "owl"} <= set(plot._series))
        drawn = {label: marker for label, _, marker in plot.legend()}
        assert drawn["uniform (+)"] == "+" and drawn["owl (x)"] == "x"
    monkeypatch.delenv("NO_COLOR")
    assert {marker for _, _, marker in plot.legend()} == {"braille"}  # in colour: braille dots


def test_a_view_of_group_or_linear_ratios_has_attention_and_mlp_apart_and_weighted_block_means():
    from fake_engine import LAYOUT, N_BLOCKS
    from workbench.views import allocation_view

    groups = [0.6 if u % 2 == 0 else 0.8 for u in range(2 * N_BLOCKS)]  # attention 0.6, MLP 0.8
    view = allocation_view("profile:...", 0.7, groups, LAYOUT)
    attention, mlp = 576 * 576 * 2 + 192 * 576 * 2, 1536 * 576 * 3
    assert view.group_ratios[0] == pytest.approx([0.6] * N_BLOCKS)
    assert view.group_ratios[1] == pytest.approx([0.8] * N_BLOCKS)
    assert view.block_ratios == pytest.approx([(0.6 * attention + 0.8 * mlp) / (attention + mlp)] * N_BLOCKS)
    linears = [0.5 + 0.1 * (i % 7 == 1) for i in range(7 * N_BLOCKS)]  # k_proj at 0.6, the rest at 0.5
    view = allocation_view("profile:...", 0.7, linears, LAYOUT)
    assert view.group_ratios[0] == pytest.approx([0.5 + 0.1 * 192 / (2 * 576 + 2 * 192)] * N_BLOCKS)
    assert view.group_ratios[1] == pytest.approx([0.5] * N_BLOCKS)
    assert allocation_view("f", 0.7, [0.7] * N_BLOCKS, LAYOUT).group_ratios is None


async def test_the_dashboard_draws_attention_and_mlp_apart_with_letters_for_a_group_best():
    from fake_engine import N_BLOCKS
    from workbench.contract import ScoredCandidate

    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: app.info is not None)
        groups = tuple(0.6 if u % 2 == 0 else 0.8 for u in range(2 * N_BLOCKS))
        app.dsa.show_best(ScoredCandidate(0, 0, "profile:x", 10.0, groups, 1.0))
        plot = app.query_one("#sparsity-plot", LivePlot)
        attention, mlp = plot._series["best attention (A)"], plot._series["best MLP (M)"]
        assert attention[1] == pytest.approx([0.6] * N_BLOCKS) and attention[2] == "A"
        assert mlp[1] == pytest.approx([0.8] * N_BLOCKS) and mlp[2] == "M" and "best" not in plot._series
        app.dsa.show_best(ScoredCandidate(1, 1, "abs | mean | no_op", 9.0, (0.7,) * N_BLOCKS, 1.0))
        assert "best" in plot._series and "best MLP (M)" not in plot._series


async def test_load_failure_is_a_notification_not_a_crash():
    app = app_with(FakeAPI(load_error="no such file or folder: /nope"))
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: "could not load" in app.status_text)
        assert any("no such file" in n.message for n in app._notifications)
        await pilot.press("s")  # still answers keys, and says why nothing starts
        assert app.is_running
        assert await wait_until(pilot, lambda: any(n.message == "no model: no such file or folder: /nope"
                                                   for n in app._notifications))
        assert "model: failed to load" in app.status_line()


@pytest.mark.parametrize("key,pane", [("d", "dashboard"), ("f2", "dashboard"), ("l", "leaderboard"), ("e", "editor"),
                                      ("c", "compare"), ("x", "export"), ("f3", "leaderboard"),
                                      ("u", "structured"), ("f7", "structured")])
async def test_pane_keys(key, pane):
    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        # F-keys work from a pane whose text box holds the focus; letters from the dashboard
        await pilot.press("f6" if key.startswith("f") else "d")
        await pilot.press(key)
        assert app.query_one("#panes").active == pane


async def test_search_start_fills_leaderboard_and_fitness_plot_then_finishes():
    app = app_with(FakeAPI(candidate_seconds=0.1))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dsa.state == "finished")
        board = app.query_one(Leaderboard)
        assert len(board.candidates) == 12
        assert app.dsa.generations == [1, 2, 3]
        assert app.dsa.best.fitness == min(c.fitness for c in board.candidates.values())
        assert "held-out" in app.status_text
        from dataclasses import replace

        app.dsa.options = replace(app.dsa.options, run="runs/second")  # as the settings dialog sets it
        await pilot.press("s")  # a new run: its fitness curve starts from its own first generation
        assert await wait_until(pilot, lambda: app.dsa.state == "running")
        assert len(app.dsa.generations) < 3
        assert await wait_until(pilot, lambda: app.dsa.state == "finished")
        assert app.dsa.generations == [1, 2, 3]


async def test_pause_resume_step_stop_bindings_follow_state():
    api = FakeAPI(candidate_seconds=0.3)
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        assert app.check_action("search", ("pause",)) is False and app.check_action("search", ("start",)) is True
        await pilot.press("s")
        assert app.check_action("search", ("start",)) is False  # "preparing" arrived before the next key
        assert await wait_until(pilot, lambda: app.dsa.state == "running")
        await pilot.press("p")
        assert await wait_until(pilot, lambda: app.dsa.state == "paused")
        assert app.check_action("search", ("resume",)) is True and app.check_action("search", ("pause",)) is False
        await pilot.press("r")
        assert await wait_until(pilot, lambda: app.dsa.state == "running")
        for _ in range(3):  # pause during a candidate, then step: always ends paused with Resume offered
            await pilot.press("p")
            assert await wait_until(pilot, lambda: app.dsa.state == "paused")
            before = len(app.query_one(Leaderboard).candidates)
            await pilot.press("n")
            assert await wait_until(pilot, lambda: len(app.query_one(Leaderboard).candidates) == before + 1)
            assert await wait_until(pilot, lambda: app.dsa.state == "paused")
            assert app.check_action("search", ("resume",)) is True
        await pilot.press("t")
        assert await wait_until(pilot, lambda: app.dsa.state == "stopped")
        assert app.dsa.options.resume  # s continues from the checkpoint
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dsa.state == "finished", timeout=15)


async def test_stop_works_while_preparing():
    api = FakeAPI(candidate_seconds=5.0)  # preparation takes as long as a candidate
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dsa.state == "preparing")
        assert app.check_action("search", ("stop",)) is True and app.check_action("search", ("pause",)) is False
        await pilot.press("t")
        assert await wait_until(pilot, lambda: app.dsa.state == "stopped")
        assert not app.dsa.options.resume and "nothing was written" in app.status_text


async def test_plots_redraw_only_when_visible_and_at_most_once_per_tick():
    app = app_with(FakeAPI(candidate_seconds=0.01), redraw_s=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.dsa.state == "finished")
        await pilot.press("l")
        fitness = app.query_one("#fitness-plot", LivePlot)
        count = fitness.redraws
        app.query_one(Dashboard).show_fitness([0, 1], [5.0, 4.0], [6.0, 5.0])
        await pilot.pause(1.2)
        assert fitness.redraws == count  # hidden: not redrawn
        await pilot.press("d")
        await pilot.pause(1.2)
        assert fitness.redraws == count + 1  # visible again: one redraw for the new data


async def test_leaderboard_sort_and_select_sends_function_everywhere():
    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.dsa.state == "finished")
        await pilot.press("l")
        board = app.query_one(Leaderboard)
        table = board.query_one("DataTable")
        table.focus()
        first = table.get_row_at(0)
        assert first[2] == "evolution" and first[3] == "final"
        assert float(first[4]) == pytest.approx(min(c.fitness for c in board.candidates.values()), abs=1e-3)
        await pilot.press("f")
        assert board.sort_by == "index" and table.get_row_at(0)[0] == "1"
        await pilot.press("enter")
        chosen = str(table.get_row_at(0)[6])
        assert await wait_until(pilot, lambda: app.query_one(Editor).text == chosen)
        assert app.query_one("#export-method").value == chosen
        assert chosen in app.query_one(Compare).query_one("DataTable").rows


async def test_editor_typing_previews_and_shows_errors_inline():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("e")
        editor = app.query_one(Editor)
        box = app.query_one("#function-input")
        box.value = ""
        box.focus()
        await pilot.press(*"abs | varr | no_op")
        assert "unknown reduction op 'varr'" in editor.error
        await pilot.press(*["backspace"] * 9)
        await pilot.press(*" | tanh")
        assert editor.text == "abs | var | tanh" and editor.error is None
        plot = app.query_one("#preview-plot", LivePlot)
        assert await wait_until(pilot, lambda: "ratios" in plot._series)
        assert ("allocation", "abs | var | tanh", 0.7, "wanda") in api.calls


async def test_editor_palette_and_op_keys():
    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("e")
        editor = app.query_one(Editor)
        editor.set_text("abs | mean | no_op")
        await pilot.pause(0.05)
        palette = app.query_one("#palette")
        palette.focus()
        palette.highlighted = next(i for i, o in enumerate(palette.options) if o.id == "transform:tanh")
        await pilot.press("enter")
        assert editor.text == "abs | mean | tanh"
        palette.highlighted = next(i for i, o in enumerate(palette.options) if o.id == "reduction:std")
        await pilot.press("enter")
        assert editor.text == "abs | std | tanh"
        app.query_one(StageView).focus()
        await pilot.press("right", "right", "delete")  # cursor on tanh
        assert editor.text == "abs | std | no_op"
        await pilot.press("ctrl+r")
        assert editor.text == "abs | std | no_op | dir=-"
        await pilot.press("ctrl+up", "ctrl+up")
        assert editor.text == "abs | std | no_op | lam=0.1 | dir=-"
        editor.set_text("abs, tanh | std | no_op")
        await pilot.pause(0.05)
        view = app.query_one(StageView)
        view.focus()
        view.cursor = 0
        await pilot.press("]")
        assert editor.text == "tanh, abs | std | no_op"
        await pilot.press("left", "delete")  # the cursor followed abs; left is tanh
        assert editor.text == "abs | std | no_op"


async def test_editor_evaluate_adds_to_leaderboard_and_seed_reaches_the_search():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("e")
        app.query_one(Editor).set_text("abs | var | tanh")
        await pilot.pause(0.05)
        app.query_one("#palette").focus()
        await pilot.press("ctrl+o")
        assert await wait_until(pilot, lambda: "abs | var | tanh" in app.query_one(Leaderboard).candidates)
        await pilot.press("ctrl+g")
        assert app.dsa.seeds == ["abs | var | tanh"]
        await pilot.press("escape", "s")
        assert await wait_until(pilot, lambda: any(c[0] == "start_search" for c in api.calls))
        start = next(c for c in api.calls if c[0] == "start_search")
        assert start[3] == ("abs | var | tanh",)


async def test_compare_evaluates_rows_and_shows_rejections():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("c")
        table = app.query_one(Compare).query_one("DataTable")
        table.focus()
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: str(table.get_cell("uniform", "ppl")) == "501.000")
        await pilot.press("a")
        assert await wait_until(pilot, lambda: str(table.get_cell("dsa", "ppl")).startswith("rejected"))
        cells = lambda: [str(table.get_cell(key, "ppl")) for key in table.rows]  # noqa: E731
        assert await wait_until(pilot, lambda: "evaluating…" not in cells())
        assert str(table.get_cell("owl", "ppl")) == "480.000"
        # one worker scores them one after another, in the table's order
        assert [c[1] for c in api.calls if c[0] == "held_out"] == [k.value for k in table.rows]


async def test_compare_shows_a_column_of_zero_shot_accuracy_per_task_from_the_settings():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("o")
        app.screen.query_one("#tasks").value = "general_facts, arc_easy"
        app.screen.query_one("#limit").value = "16"
        await pilot.press("ctrl+s")
        assert app.dsa.settings.tasks == ("general_facts", "arc_easy") and app.dsa.settings.limit == 16
        await pilot.press("c")
        table = app.query_one(Compare).query_one("DataTable")
        assert "task:general_facts" in table.columns and "task:arc_easy" in table.columns
        table.focus()
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: str(table.get_cell("uniform", "task:general_facts")) == "62.5")
        assert str(table.get_cell("uniform", "task:arc_easy")) == "failed"
        assert str(table.get_cell("uniform", "ppl")) == "501.000"
        assert ("held_out", "uniform", ("general_facts", "arc_easy")) in api.calls
        await pilot.press("o")
        app.screen.query_one("#tasks").value = ""
        await pilot.press("ctrl+s")
        assert not any(str(k.value).startswith("task:") for k in table.columns)


async def test_export_reports_progress_and_result_or_error():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("x")
        export = app.query_one(Export)
        app.query_one("#export-out").value = "out/m70"
        await pilot.click("#export-button")
        assert await wait_until(pilot, lambda: "written: out/m70" in str(export.query_one("#export-result").render()))
        assert ("export", "owl", "out/m70", "dense", "keep", False) in api.calls
        assert str(export.query_one("#export-stage").render()) == "pruning: 3 of 3"  # the stage, in words
        app.query_one("#export-out").value = "exists"
        await pilot.click("#export-button")
        assert await wait_until(pilot, lambda: "already exists" in str(export.query_one("#export-result").render()))


async def test_an_unforeseen_export_error_is_one_line_and_gives_the_button_back():
    app = app_with(FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("x")
        export, button = app.query_one(Export), app.query_one("#export-button")
        app.query_one("#export-out").value = "full-disk"
        await pilot.click("#export-button")
        result = lambda: str(export.query_one("#export-result").render())  # noqa: E731
        assert await wait_until(pilot, lambda: result().startswith("export failed"))
        assert result() == "export failed: OSError: [Errno 28] No space left on device" and not button.disabled
        app.query_one("#export-out").value = "slow"
        await pilot.click("#export-button")
        app.query_one("#export-out").focus()
        await pilot.press("enter")  # a second export while the first runs: refused, the first one's result kept
        assert any(n.message == "an export is still running" for n in app._notifications)
        assert await wait_until(pilot, lambda: result() == "written: slow" and not button.disabled)
        assert [c[2] for c in app.api.calls if c[0] == "export"] == ["full-disk", "slow"]


async def test_the_recipe_format_takes_a_yaml_file_and_no_dtype():
    from engine.choices import RECIPE_EXPORT
    from textual.widgets import Select

    app = app_with(FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("x")
        out, dtype = app.query_one("#export-out"), app.query_one("#export-dtype")
        assert out.value == "out/pruned" and not dtype.disabled
        app.query_one("#export-format", Select).value = RECIPE_EXPORT
        assert await wait_until(pilot, lambda: out.value == "out/recipe.yaml" and dtype.disabled)
        app.query_one("#export-format", Select).value = "dense"
        assert await wait_until(pilot, lambda: out.value == "out/pruned" and not dtype.disabled)
        out.value = "mine"  # a path the user typed stays
        app.query_one("#export-format", Select).value = RECIPE_EXPORT
        assert await wait_until(pilot, lambda: dtype.disabled)
        assert out.value == "mine"


async def test_shift_w_writes_the_report_of_the_run_beside_it_or_says_why_not():
    from workbench.contract import RunOptions

    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("W")
        assert await wait_until(pilot, lambda: any("report written: runs/search-report/report.md" in n.message
                                                   for n in app._notifications))
        assert ("report", "runs/search", "runs/search-report") in api.calls
        app.dsa.options = RunOptions(run="empty")
        await pilot.press("W")
        assert await wait_until(pilot, lambda: any("no report: run empty has no scored candidate" in n.message
                                                   for n in app._notifications))


async def test_profile_search_with_stages_shows_strategy_and_stage_and_distills_into_the_editor():
    api = FakeAPI()
    app = app_with(api, settings=dict(strategy="evopress", stages="512:2", population=4, generations=3))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.dsa.state == "finished")
        board = app.query_one(Leaderboard)
        table = board.query_one("DataTable")
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert {r[2] for r in rows} == {"evopress"} and {r[3] for r in rows} == {"final", "1 (cheap)"}
        assert [r[3] for r in rows].index("1 (cheap)") > [r[3] for r in rows].index("final")  # cheap ones last
        assert app.dsa.best.text.startswith("profile:") and app.dsa.best.stage == 1
        await pilot.press("l")
        table.focus()
        await pilot.press("enter")
        chosen = str(table.get_row_at(0)[6])
        assert await wait_until(pilot, lambda: app.query_one(Editor).text == FakeAPI.DISTILLED)
        assert ("distill", chosen) in api.calls and app.query_one("#export-method").value == chosen


async def test_settings_screen_changes_params_and_validates():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("o")
        assert isinstance(app.screen, SettingsScreen)
        app.screen.query_one("#sparsity").value = "1.5"
        await pilot.press("ctrl+s")
        assert "sparsity must be between 0 and 1" in str(app.screen.query_one("#settings-error").render())
        app.screen.query_one("#sparsity").value = "0.6"
        app.screen.query_one("#stages").value = "512:30"  # keeps more than the 24 candidates of a generation
        await pilot.press("ctrl+s")
        assert "keeps fewer than the 24 candidates" in str(app.screen.query_one("#settings-error").render())
        app.screen.query_one("#stages").value = "auto"
        app.screen.query_one("#sparsity").value = "0.6"
        app.screen.query_one("#population").value = "8"
        await pilot.press("ctrl+s")
        s = app.dsa.settings
        assert (s.sparsity, s.population, s.stages_text) == (0.6, 8, "512:2")  # auto, for 8 candidates
        assert await wait_until(pilot, lambda: ("allocation", "owl", 0.6, "wanda") in api.calls)
        await pilot.press("o", "escape")
        assert app.dsa.settings.sparsity == 0.6


async def test_help_lists_every_binding_and_palette_offers_actions():
    app = app_with()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text").render())
        for binding in app.BINDINGS + Editor.BINDINGS + StageView.BINDINGS + Compare.BINDINGS:
            assert binding.description in text and binding.key in text
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Start", "Settings", "Dashboard", "Export", "Help"):
            assert wanted in titles
        assert all(b.id and b.tooltip for b in app.BINDINGS)


async def test_quit_during_a_search_stops_it_and_keeps_the_checkpoint():
    api = FakeAPI(candidate_seconds=5.0)
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.dsa.state == "running")
        await pilot.press("q")
    assert not api.controller.running and api.controller.state == "stopped"
    assert api.controller.store.exists


async def test_quit_during_an_export_says_so_on_every_pane_answers_keys_and_waits_for_it():
    from textual.widgets import TabbedContent

    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("x")
        app.query_one("#export-out").value = "held"  # until export_released is set
        await pilot.click("#export-button")
        await pilot.press("q")
        assert await wait_until(pilot, lambda: "quitting once these finish: export" in app.status_text)
        await pilot.press("f3")  # the app still takes keys while it waits
        assert app.query_one(TabbedContent).active == "leaderboard"
        assert [n.message for n in app._notifications] == ["quitting once these finish: export…"]
        assert not app.check_action("search", ("start",))  # nothing new starts while quitting
        api.export_released.set()
        assert await wait_until(pilot, lambda: app.return_code is not None)
    assert app.return_code == 0 and not any(w.is_running for w in app.workers)
    assert [c[2] for c in api.calls if c[0] == "export"] == ["held"]


async def test_quit_during_a_calibration_ends_it_at_its_next_step(tiny_model_dir):
    """The real engine on the tiny model, its first calibration about a minute long: after q the app exits at the
    calibration's next step instead of its end."""
    from engine.data_config import DataConfig
    from workbench.engine_api import EngineAPI

    data = DataConfig(seqlen=64, calib_tokens=1_000_000, fitness_tokens=256, eval_tokens=256, batch_size=4,
                      sample_size=4096)
    api = EngineAPI(str(tiny_model_dir), data, device="cpu")
    app = make_app(AppConfig(redraw_s=0.1), api)
    async with app.run_test(size=SIZE) as pilot:
        assert await wait_until(pilot, lambda: app.status_text.startswith("calibration"), timeout=60)
        pressed = time.monotonic()
        await pilot.press("q")
        assert await wait_until(pilot, lambda: app.return_code is not None, timeout=10)
        assert time.monotonic() - pressed < scaled(10)
    assert app.return_code == 0 and api.session._calibration is None  # ended unfinished


async def test_structured_pane_runs_stages_and_plots_kept_heads_and_neurons():
    api = FakeAPI(candidate_seconds=0.01)
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("f7")
        pane = app.query_one(Structured)
        pane.query_one("#structured-stages").value = "2:64:32,1:128:64"
        await pilot.press("s")  # on this pane, s starts the structured search
        assert await wait_until(pilot, lambda: app.structured.state == "finished")
        assert app.dsa.state == "idle"  # the DSA search was not touched
        settings = api.calls[-1][2]
        assert [str(st) for st in settings.stages] == ["2:64:32", "1:128:64"] and settings.target == 0.5
        assert [row[:5] for row in pane.stages] == [[1, 4, 2, 64, 32], [2, 2, 1, 128, 64]]
        assert [row[5] for row in pane.stages] == [0, 0]  # reset at the end of each generation
        plot = pane.query_one("#kept-plot", LivePlot)
        heads = plot._series["heads (best)"][1]
        assert len(heads) == 12 and all(0 < h < 1 for h in heads)
        assert "held-out" in str(pane.query_one("#structured-status").render())


async def test_structured_pause_resume_stop_act_on_the_pane_in_view():
    api = FakeAPI(candidate_seconds=2.0)  # the run (about 12 candidates) outlasts a busy machine's slow keys
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("f7")
        app.query_one("#structured-stages").value = "2:64:32,1:128:64"
        await pilot.press("s")
        assert await wait_until(pilot, lambda: app.structured.state == "running")
        await pilot.press("p")
        assert await wait_until(pilot, lambda: app.structured.state == "paused")
        assert app.check_action("search", ("resume",)) is True
        await pilot.press("f2")
        assert app.check_action("search", ("resume",)) is False and app.check_action("search", ("start",)) is True
        await pilot.press("s")  # a DSA search may not start beside the structured one
        assert app.dsa.state == "idle" and api.controller is None
        await pilot.press("f7")
        await pilot.press("r")
        assert await wait_until(pilot, lambda: app.structured.state == "running")
        await pilot.press("t")
        assert await wait_until(pilot, lambda: app.structured.state == "stopped")


async def test_structured_export_button_and_bad_settings():
    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("f7")
        pane = app.query_one(Structured)
        pane.query_one("#structured-out").value = "out/small"
        pane.query_one("#structured-finetune").value = "4096"
        pane.query_one("#structured-export").press()
        assert await wait_until(pilot, lambda: any(c[0] == "export_structured" for c in api.calls))
        assert api.calls[-1] == ("export_structured", "runs/structured", "out/small", 4096, False)
        pane.query_one("#structured-target").value = "half"
        await pilot.press("s")
        await pilot.pause(0.2)
        assert app.structured.state == "idle" and not any(c[0] == "start_structured" for c in api.calls)


async def test_a_new_target_previews_the_editors_function_again():
    from dataclasses import replace

    api = FakeAPI()
    app = app_with(api)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("e")
        app.query_one(Editor).set_text("abs | mean | no_op")
        assert await wait_until(pilot, lambda: ("allocation", "abs | mean | no_op", 0.7, "wanda") in api.calls)
        app.dsa.apply((replace(app.dsa.settings, sparsity=0.5), app.dsa.options))  # as the settings dialog returns
        assert await wait_until(pilot, lambda: ("allocation", "abs | mean | no_op", 0.5, "wanda") in api.calls)


async def test_a_result_computed_for_the_target_before_a_settings_change_is_dropped():
    from screens.messages import CompareDone

    app = app_with(FakeAPI())
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.info is not None)
        await pilot.press("c")
        table = app.query_one(Compare).query_one("DataTable")
        app.post_message(CompareDone("owl", 1.0, None, {}, (0.5, "wanda")))  # asked at 0.5, the target is now 0.7
        app.post_message(CompareDone("uniform", 2.0, None, {}, (0.7, "wanda")))
        assert await wait_until(pilot, lambda: str(table.get_cell("uniform", "ppl")) == "2.000")
        assert str(table.get_cell("owl", "ppl")) == "—"


@pytest.mark.slow
async def test_a_search_on_a_local_ray_cluster_runs_from_the_tui(tiny_model_dir, tiny_data, tmp_path):
    """`dsa-workbench --cluster local` on the real engine: Ray starts in the search's thread under Textual's
    capture of stderr, which has no file descriptor (pytest's fault handler is off here, as it is in the TUI,
    so Ray's driver meets the TUI's conditions; ray.init failed on them), and the search finishes."""
    import faulthandler

    import ray

    from workbench.contract import RunOptions
    from workbench.engine_api import EngineAPI

    api = EngineAPI(str(tiny_model_dir), tiny_data, device="cpu")
    settings = api.search_settings(sparsity=0.6, population=4, generations=2)
    options = RunOptions(str(tmp_path / "run"), cluster="local", workers=1)
    app = make_app(AppConfig(settings, options, redraw_s=0.1), api)
    faulthandler.disable()
    try:
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_until(pilot, lambda: app.info is not None, timeout=60)
            await pilot.press("s")
            assert await wait_until(pilot, lambda: app.dsa.state in ("finished", "failed"), timeout=300)
            assert app.dsa.state == "finished", app.status_text
            assert len(app.query_one(Leaderboard).candidates) >= 4 and (tmp_path / "run" / "final.json").is_file()
    finally:
        ray.shutdown()
        faulthandler.enable(sys.__stderr__)
