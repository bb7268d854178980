"""Headless CLI on the tiny model: results, saved folders, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.cli import main

TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_writes_a_loadable_folder_with_recipe(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "pruned"
    code, stdout, _ = run(capsys, "prune", "--model", str(tiny_model_dir), "--allocation", "owl", "--sparsity", "0.6",
                          "--out", str(out), "--json", "--quiet", *TINY)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert summary["perplexity"] != summary["dense_perplexity"]  # random weights: no direction to expect
    recipe = json.loads((out / "pruning.json").read_text())
    assert recipe["allocation"]["method"] == "owl" and recipe["metric"] == "wanda"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    for name, achieved in recipe["achieved"]["linears"].items():
        weight = model.get_submodule(name).weight
        assert (weight == 0).float().mean().item() == pytest.approx(achieved)
    code, stdout, _ = run(capsys, "eval", str(out), "--json", "--quiet", "--kl", "--dense", str(tiny_model_dir), *TINY)
    assert code == 0
    result = json.loads(stdout)
    assert result["perplexity"] == pytest.approx(summary["perplexity"], rel=1e-4)
    assert result["kl"] > 0


def test_prune_refuses_to_overwrite(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "exists"
    out.mkdir()
    code, _, err = run(capsys, "prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), *TINY)
    assert code == 2 and "already exists" in err


def test_allocations_table(capsys, tiny_model_dir):
    code, stdout, err = run(capsys, "allocations", "--model", str(tiny_model_dir), "--sparsity", "0.7", "--json",
                            "--function", "abs | mean | no_op", *TINY)
    assert code == 0
    assert "allocations" in err and "perplexity" not in err  # one bar over the methods, not one per tried value
    result = json.loads(stdout)
    assert {"uniform", "owl", "global", "er", "er-plus", "alpha", "abs | mean | no_op"} <= set(result["methods"])
    assert all(len(r) == 3 for r in result["methods"].values())


@pytest.mark.parametrize("argv,message", [
    (["prune", "--model", "/no/such/model", "--sparsity", "0.5", "--out", "OUT"], "no such file or folder"),
    (["prune", "--model", "NONMODEL", "--sparsity", "0.5", "--out", "OUT"], "not a model folder"),
    (["prune", "--model", "GPT2", "--sparsity", "0.5", "--out", "OUT"], "unsupported architecture"),
    (["prune", "--model", "TINY", "--sparsity", "1.2", "--out", "OUT"], "between 0 and 1"),
    (["prune", "--model", "TINY", "--sparsity", "0", "--out", "OUT"], "between 0 and 1"),
    (["prune", "--model", "TINY", "--sparsity", "nan", "--out", "OUT"], "between 0 and 1"),
    (["prune", "--model", "TINY", "--sparsity", "0.5", "--allocation", "abslog | varr | atan", "--out", "OUT"],
     "unknown reduction op 'varr'"),
    (["prune", "--model", "TINY", "--sparsity", "0.5", "--eval-tokens", "10000000", "--out", "OUT"],
     "--eval-tokens"),
    (["allocations", "--model", "TINY", "--sparsity", "-0.1"], "between 0 and 1"),
    (["eval", "/no/such/model"], "no such file or folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, tiny_model_dir, argv, message):
    from transformers import GPT2Config

    (tmp_path / "nonmodel").mkdir()
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    subst = {"TINY": str(tiny_model_dir), "NONMODEL": str(tmp_path / "nonmodel"), "GPT2": str(tmp_path / "gpt2"),
             "OUT": str(tmp_path / "out")}
    argv = [subst.get(a, a) for a in argv]
    code, _, err = run(capsys, argv[0], *TINY[:-2], *argv[1:], "--quiet")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_help_for_every_command(capsys):
    for command in ("prune", "eval", "allocations", "distill", "transfer"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert "--json" in capsys.readouterr().out


def test_options_without_a_command_are_the_tuis(monkeypatch):
    from workbench import commands

    ran = []
    monkeypatch.setattr(commands, "run", lambda args: ran.append(args) or 0)
    assert main([]) == 0 and main(["--cluster", "local", "--workers", "2"]) == 0
    assert [a.command for a in ran] == ["tui", "tui"] and (ran[1].cluster, ran[1].workers) == ("local", 2)
    with pytest.raises(SystemExit) as exit_:  # --help alone is still the list of commands
        main(["--help"])
    assert exit_.value.code == 0


def test_default_dtype_on_cpu_is_float32(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "p"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), "--no-eval",
                 "--quiet", *TINY]) == 0
    capsys.readouterr()
    from safetensors.torch import load_file

    tensors = load_file(out / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    from workbench import commands

    def oom(args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(commands, "run", oom)
    code, _, err = run(capsys, "allocations", "--sparsity", "0.5")
    assert code == 1 and err.count("\n") == 1 and "out of memory" in err


@pytest.mark.slow
def test_zero_shot_accuracy_in_eval_and_in_the_recipe_of_a_pruning(capsys, tmp_path, tiny_model_dir):
    """A local JSON-lines task through lm-eval; a task that cannot run is one line and the rest stand."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Two and two make", "choices": ["four"], "answer": 0}\n')
    tasks = ["--tasks", f"tests/data/six_facts.jsonl,no_such_task_anywhere,{bad}", "--limit", "3"]
    code, stdout, _ = run(capsys, "eval", str(tiny_model_dir), "--json", "--quiet", *tasks, *TINY)
    assert code == 0
    result = json.loads(stdout)
    assert result["perplexity"] > 1 and result["zero_shot"]["six_facts"]["samples"] == 3
    assert 0 <= result["zero_shot"]["six_facts"]["accuracy"] <= 1
    assert "no_such_task_anywhere" in result["zero_shot"]["no_such_task_anywhere"]["error"]
    assert result["zero_shot"]["bad"]["error"].startswith(f"{bad}:1: expected {{\"question\": str")
    code, stdout, _ = run(capsys, "eval", str(tiny_model_dir), "--quiet", *tasks, *TINY)
    assert "zero-shot six_facts: acc " in stdout and "zero-shot no_such_task_anywhere: failed: " in stdout
    out = tmp_path / "pruned"
    code, _, _ = run(capsys, "prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out),
                     "--quiet", "--tasks", "tests/data/six_facts.jsonl", "--limit", "2", *TINY)
    assert code == 0
    zero_shot = json.loads((out / "pruning.json").read_text())["zero_shot"]
    assert zero_shot["tasks"] == ["tests/data/six_facts.jsonl"] and zero_shot["limit"] == 2
    assert zero_shot["dense"]["six_facts"]["samples"] == zero_shot["pruned"]["six_facts"]["samples"] == 2


def test_allocations_under_the_reference_nan_policy_label_the_function_and_record_replaced_blocks(capsys,
                                                                                                tiny_model_dir):
    code, stdout, _ = run(capsys, "allocations", "--model", str(tiny_model_dir), "--sparsity", "0.7", "--json",
                          "--quiet", "--nan-policy", "reference", "--function", "no_op | mean | log", *TINY)
    assert code == 0
    result = json.loads(stdout)
    assert "abslog | var | atan, asin | nan=reference" in result["methods"]
    assert "no_op | mean | log | nan=reference" in result["methods"] and not result["rejected"]
    assert isinstance(result["parameters"]["abslog | var | atan, asin | nan=reference"]["replaced_blocks"], list)
    assert result["parameters"]["alpha"]["eps"] == 0.2


def test_every_subcommand_has_one_entry_in_the_dispatch_table_and_it_resolves():
    import argparse
    import importlib

    from workbench.cli import build_parser
    from workbench.commands import COMMANDS

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == set(COMMANDS)
    for module, function in COMMANDS.values():
        assert callable(getattr(importlib.import_module(module), function))
