"""The TUI's engine API on the tiny model: the calls the panes' workers make."""

from __future__ import annotations

import pytest

from engine.search import events as ev
from screens.settings import SearchParams
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
    assert api.held_out("uniform", 0.6, "wanda") > 1
    with pytest.raises(ValueError, match="unknown reduction"):
        api.allocation("abs | varr | tanh", 0.6, "wanda")
    assert api.parse(api.format(api.parse("abs | var | tanh | dir=-"))) == api.parse("abs | var | tanh | dir=-")
    assert "MiB" in api.memory()


def test_search_and_export(api, tmp_path):
    seen = []
    params = SearchParams(sparsity=0.6, population=2, generations=1, run=str(tmp_path / "run"))
    controller = api.start_search(params, ["abs | mean | no_op"], seen.append, lambda message: None)
    assert controller.join(60)
    assert isinstance(seen[-1], ev.SearchFinished)
    assert seen[-1].held_out.keys() >= {"uniform", "owl"}
    path = api.export("owl", 0.6, "wanda", str(tmp_path / "out"), "dense", "keep", False, lambda *a: None)
    assert (tmp_path / "out" / "pruning.json").is_file() and path.endswith("out")
    with pytest.raises(ValueError, match="already exists"):
        api.export("owl", 0.6, "wanda", str(tmp_path / "out"), "dense", "keep", False, lambda *a: None)
