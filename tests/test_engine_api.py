"""The TUI's engine API on the tiny model: the calls the panes' workers make."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.search import events as ev
from workbench.contract import RunOptions
from waiting import scaled, wait_for
from workbench.engine_api import EngineAPI


@pytest.fixture
def api(tiny_model_dir, tiny_data):
    api = EngineAPI(str(tiny_model_dir), tiny_data, device="cpu")
    info = api.load(lambda message: None)
    assert info.blocks == 3 and info.device == "cpu"
    return api


def test_allocation_fitness_held_out_and_errors(api):
    view = api.allocation("abs | var | tanh", 0.6, "wanda")
    assert len(view.block_ratios) == 3 and view.block_values is not None
    fitness, scored = api.fitness("abs | var | tanh", 0.6, "wanda")
    assert fitness > 1 and scored.block_ratios == view.block_ratios
    assert api.held_out("uniform", 0.6, "wanda") > (1, {})
    with pytest.raises(ValueError, match="unknown reduction"):
        api.allocation("abs | varr | tanh", 0.6, "wanda")
    assert api.parse(api.format(api.parse("abs | var | tanh | dir=-"))) == api.parse("abs | var | tanh | dir=-")
    assert "MiB" in api.memory()
    # the UI thread reads the caches' sizes the session published after its last pruning, never its dicts
    assert api.session.memory == api.session.cache_bytes() and api.session.memory["row ranks"] > 0


def test_held_out_scores_zero_shot_tasks_of_the_pruned_model_with_progress(api):
    """A local JSON-lines task through lm-eval on the tiny model; a missing task file is that task's failure."""
    seen = []
    ppl, scores = api.held_out("uniform", 0.6, "wanda", ("tests/data/six_facts.jsonl", "missing.jsonl"), 4,
                               lambda stage, done, total: seen.append((stage, done, total)))
    assert ppl > 1
    assert scores["six_facts"]["samples"] == 4 and 0 <= scores["six_facts"]["accuracy"] <= 1
    assert scores["missing"]["error"] == "no such task file: missing.jsonl"
    assert seen[-1][0] == "zero-shot six_facts" and seen[-1][1] == seen[-1][2] == 16  # 4 questions x 4 choices


def test_search_and_export(api, tmp_path):
    seen = []
    params = api.search_settings(sparsity=0.6, population=2, generations=1), RunOptions(str(tmp_path / "run"))
    controller = api.start_search(*params, ["abs | mean | no_op"], seen.append, lambda message: None)
    assert controller.join(scaled(60))
    assert isinstance(seen[-2], ev.SearchFinished) and seen[-1] == ev.StateChanged("finished", evaluated=2)
    assert seen[-2].held_out.keys() >= {"uniform", "owl", "first"}
    path = api.export("owl", 0.6, "wanda", str(tmp_path / "out"), "dense", "keep", False, lambda *a: None)
    assert (tmp_path / "out" / "pruning.json").is_file() and path.endswith("out")
    with pytest.raises(ValueError, match="already exists"):
        api.export("owl", 0.6, "wanda", str(tmp_path / "out"), "dense", "keep", False, lambda *a: None)
    recipe = api.export("owl", 0.6, "wanda", str(tmp_path / "r.yaml"), "llmcompressor", "keep", False, print)
    settings = yaml.safe_load(Path(recipe).read_text())["pruning_stage"]["pruning_modifiers"]["WandaPruningModifier"]
    assert settings["sparsity"] == pytest.approx(list(api.session.allocate("owl", 0.6, "wanda").block_ratios), abs=1e-6)


def states(seen):
    return [e.state for e in seen if isinstance(e, ev.StateChanged)]


def test_real_engine_pause_then_step_and_step_then_stop(api, tmp_path):
    seen = []
    params = api.search_settings(sparsity=0.6, population=20, generations=5), RunOptions(str(tmp_path / "run"))
    controller = api.start_search(*params, [], seen.append, lambda message: None)
    assert wait_for(lambda: any(isinstance(e, ev.CandidateScored) for e in seen))
    for _ in range(3):
        controller.pause()
        assert wait_for(lambda: states(seen)[-1] == "paused"), states(seen)
        logged = controller.evaluated
        controller.step()
        assert wait_for(lambda: states(seen)[-1] == "paused" and controller.evaluated == logged + 1), states(seen)
    controller.step()
    controller.stop()
    assert controller.join(scaled(30))
    assert states(seen)[-3:] in (["stepping", "stopping", "stopped"], ["paused", "stopping", "stopped"])
    assert seen[-1].resumable and (tmp_path / "run" / "run.json").exists()
    with pytest.raises(ValueError, match="already holds a search"):
        api.start_search(*params, [], seen.append, lambda message: None)


def test_real_engine_stop_while_preparing_writes_nothing(tiny_model_dir, tiny_data, tmp_path):
    api = EngineAPI(str(tiny_model_dir), tiny_data, device="cpu")
    api.load(lambda message: None)  # a fresh session: the search must calibrate while preparing
    seen = []
    params = api.search_settings(sparsity=0.6, population=2, generations=1), RunOptions(str(tmp_path / "run"))
    controller = api.start_search(*params, [], seen.append, lambda message: None)
    controller.stop()
    assert controller.join(scaled(30))
    assert states(seen) == ["preparing", "stopping", "stopped"] and not seen[-1].resumable
    assert not (tmp_path / "run").exists()
    controller = api.start_search(*params, [], seen.append, lambda message: None)  # nothing blocks a new start
    assert controller.join(scaled(60)) and controller.state == "finished"


def test_a_cluster_is_reached_in_the_search_thread_so_the_tui_does_not_wait_for_ray(api, tmp_path, monkeypatch):
    import threading

    from engine.errors import WorkbenchError
    from engine.search import cluster

    reached, release = [], threading.Event()

    def slow_then_unreachable(address, workers, cpus_per_worker=None):  # starting Ray takes seconds
        reached.append(threading.current_thread().name)
        release.wait(scaled(30))
        raise WorkbenchError(f"cannot reach the Ray cluster at {address}: refused")

    monkeypatch.setattr(cluster, "connect", slow_then_unreachable)
    seen, said = [], []
    params = (api.search_settings(sparsity=0.6, population=2, generations=1),
              RunOptions(str(tmp_path / "run"), cluster="127.0.0.1:1"))
    controller = api.start_search(*params, [], seen.append, said.append)  # returns while Ray is reached
    assert wait_for(lambda: reached) and reached == ["dsa-search"] and controller.state == "preparing"
    assert any(m.startswith("connecting to Ray (127.0.0.1:1)") for m in said)
    release.set()
    assert controller.join(scaled(30)) and states(seen)[-1] == "failed"
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in seen[-1].message and not (tmp_path / "run").exists()


def test_lm_eval_draws_no_bar_of_its_own_unless_verbose(api, capfd):
    import logging

    api.held_out("uniform", 0.6, "wanda", ("general_facts",), 2)
    assert "it/s" not in capfd.readouterr().err
    logging.getLogger("engine.zeroshot").setLevel(logging.INFO)  # what --verbose does
    try:
        api.held_out("uniform", 0.6, "wanda", ("general_facts",), 2)
    finally:
        logging.getLogger("engine.zeroshot").setLevel(logging.NOTSET)
    assert "it/s" in capfd.readouterr().err
