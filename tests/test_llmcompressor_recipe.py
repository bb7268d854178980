"""`recipe --format llmcompressor`: the YAML's targets and values, and llm-compressor's own `oneshot` running it on
the tiny model (in a virtual environment of its own: it pins transformers <= 5.17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from engine.errors import WorkbenchError
from engine.llmcompressor_recipe import llmcompressor_recipe, recipe_targets
from workbench.cli import main

TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu"]
ROOT = Path(__file__).resolve().parent.parent
LLMCOMPRESSOR = ["torch==2.13.0", "llmcompressor==0.14.0.1", "transformers>=5.15,<=5.17"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def modifier(path: Path) -> tuple[str, dict]:
    recipe = yaml.safe_load(path.read_text())
    ((name, settings),) = recipe["pruning_stage"]["pruning_modifiers"].items()
    return name, settings


def test_one_ratio_per_block_targets_the_blocks_and_finer_ones_every_linear_by_name():
    names = [f"model.layers.{b}.{part}" for b in range(3) for part in ("self_attn.q_proj", "mlp.down_proj")]
    per_block = {n: 0.5 + 0.1 * int(n.split(".")[2]) for n in names}
    assert recipe_targets(per_block) == (["re:^model\\.layers\\.\\d+$"], [0.5, 0.6, 0.7])
    finer = dict(per_block, **{"model.layers.1.mlp.down_proj": 0.65})
    assert recipe_targets(finer) == (names, [round(finer[n], 6) for n in names])


def test_a_metric_llmcompressor_cannot_run_is_refused_in_one_line():
    with pytest.raises(WorkbenchError, match="wanda or sparsegpt, not magnitude"):
        llmcompressor_recipe({"model.layers.0.mlp.up_proj": 0.5}, "magnitude")


def test_a_magnitude_runs_recipe_is_refused_before_its_model_loads(capsys, tmp_path, tiny_model_dir, monkeypatch):
    run_folder = tmp_path / "run"
    assert run(capsys, "search", "--model", str(tiny_model_dir), "--run", str(run_folder), "--sparsity", "0.6",
               "--metric", "magnitude", "--generations", "1", "--population", "2", "--fitness-tokens", "256",
               "--quiet", *TINY)[0] == 0
    import workbench.result_commands

    monkeypatch.setattr(workbench.result_commands, "best_of_run", lambda *a: pytest.fail("the model was loaded"))
    code, _, err = run(capsys, "recipe", "--from-run", str(run_folder), "--out", str(tmp_path / "r.yaml"))
    assert code == 2 and err.count("\n") == 1 and "wanda or sparsegpt, not magnitude" in err


def test_recipe_of_an_allocation_and_of_its_exported_folder_agree(capsys, tmp_path, tiny_model_dir, tiny_session):
    code, out, err = run(capsys, "recipe", "--model", str(tiny_model_dir), "--allocation", "owl", "--sparsity", "0.6",
                         "--out", str(tmp_path / "owl.yaml"), "--quiet", *TINY)
    assert code == 0, err
    assert "wrote" in out and "oneshot(" in out
    name, settings = modifier(tmp_path / "owl.yaml")
    expected = tiny_session.allocate("owl", 0.6, "wanda").block_ratios
    assert name == "WandaPruningModifier" and settings["mask_structure"] == "0:0"
    assert settings["targets"] == ["re:^model\\.layers\\.\\d+$"]
    assert settings["sparsity"] == pytest.approx(list(expected), abs=1e-6)

    folder = tmp_path / "pruned"
    assert run(capsys, "export", "--model", str(tiny_model_dir), "--allocation", "owl", "--sparsity", "0.6",
               "--out", str(folder), "--no-eval", "--quiet", *TINY)[0] == 0
    assert run(capsys, "recipe", str(folder), "--out", str(tmp_path / "folder.yaml"), "--quiet")[0] == 0
    assert modifier(tmp_path / "folder.yaml")[1]["sparsity"] == pytest.approx(settings["sparsity"], abs=1e-6)
    code, _, err = run(capsys, "recipe", str(folder), "--out", str(tmp_path / "folder.yaml"))
    assert code == 2 and "already exists" in err


def test_a_two_four_pattern_is_the_mask_structure(capsys, tmp_path, tiny_model_dir):
    assert run(capsys, "recipe", "--model", str(tiny_model_dir), "--pattern", "2:4", "--metric", "sparsegpt",
               "--out", str(tmp_path / "r.yaml"), "--quiet", *TINY)[0] == 0
    name, settings = modifier(tmp_path / "r.yaml")
    assert name == "SparseGPTModifier" and settings["mask_structure"] == "2:4"
    assert set(settings["sparsity"]) == {0.5}


@pytest.fixture(scope="session")
def llmcompressor_python() -> str:
    """A Python with llm-compressor: $LLMCOMPRESSOR_PYTHON, or a virtual environment built once in
    .venv-llmcompressor (CPU torch first, as for the project)."""
    given = os.environ.get("LLMCOMPRESSOR_PYTHON")
    if given:
        return given
    venv = ROOT / ".venv-llmcompressor"
    python = venv / "bin" / "python"
    if not (venv / "ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        for requirement in (LLMCOMPRESSOR[:1], LLMCOMPRESSOR[1:]):  # torch first: the CPU wheel
            subprocess.run([str(python), "-m", "pip", "install", "-q", *requirement], check=True)
        (venv / "ready").write_text("")
    return str(python)


ONESHOT = textwrap.dedent("""
    import json, sys
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    folder, recipe, out = sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(0, 500, (8, 64)).tolist()})
    oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=8, max_seq_length=64,
            pipeline="independent")
    sparsity = {name: (module.weight == 0).float().mean().item() for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear)}
    open(out, "w").write(json.dumps(sparsity))
""")


@pytest.mark.slow
@pytest.mark.parametrize("allocation", ["owl", "dlp"])
@pytest.mark.parametrize("granularity", ["block", "linear"])
def test_llmcompressor_oneshot_prunes_every_linear_to_the_recipe(capsys, tmp_path, tiny_model_dir, tiny_session,
                                                                 llmcompressor_python, allocation, granularity):
    """The real library on the tiny model: each linear's sparsity after `oneshot` is the allocation's ratio (to one
    weight per row: it keeps int(columns x ratio) per row), lm_head dense. `linear`: a per-linear allocation
    (unequal ratios inside each block, as a linear-granularity profile has)."""
    alloc = tiny_session.allocate(allocation, 0.6, "wanda")
    ratios = dict(alloc.linear_ratios)
    if granularity == "linear":
        ratios = {n: min(0.9, r + (0.05 if "mlp" in n else -0.05)) for n, r in ratios.items()}
    order = [n for n, _ in tiny_session.loaded.model.named_modules() if n in ratios]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(llmcompressor_recipe({n: ratios[n] for n in order}, "wanda"))
    out = tmp_path / "sparsity.json"
    done = subprocess.run([llmcompressor_python, "-c", ONESHOT, str(tiny_model_dir), str(recipe), str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    achieved = json.loads(out.read_text())
    model = tiny_session.loaded.model
    for name, ratio in ratios.items():
        columns = model.get_submodule(name).weight.shape[1]
        assert achieved[name] == pytest.approx(int(columns * ratio) / columns, abs=1e-6), name
    assert achieved["lm_head"] == 0
