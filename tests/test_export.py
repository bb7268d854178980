"""Export: loadable folders with exact sparsity and logits, recipe replay, atomicity, no overwrite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from engine.errors import WorkbenchError
from engine.export import export_pruned, read_recipe_file, replay_recipe
from workbench.cli import main

FUNCTION = "abs | mean | no_op | lam=0.1"
TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu", "--quiet"]


def tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_round_trip_identical_logits_and_exact_sparsity(tmp_path, tiny_session):
    out = tmp_path / "m60"
    stages = []
    done = export_pruned(tiny_session, FUNCTION, 0.6, "wanda", out, max_shard_size="100KB",
                         progress=lambda stage, done, total: stages.append((stage, done, total)))
    said = list(dict.fromkeys(stage for stage, _, _ in stages))  # every stage, in order
    assert said[0] == "evaluation perplexity" and said[-2:] == ["writing", "verifying tensors"]
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 1
    for name in ("config.json", "generation_config.json", "tokenizer.json", "pruning.json"):
        assert (out / name).is_file(), name
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert stages[-1][1] == stages[-1][2] == len(reloaded.state_dict())  # every saved tensor verified
    tokens = tiny_session.windows("evaluation")[:2]
    assert torch.equal(reloaded(tokens).logits, tiny_session.model(tokens).logits)
    recipe = json.loads((out / "pruning.json").read_text())
    for name, sparsity in recipe["achieved"]["linears"].items():
        weight = reloaded.get_submodule(name).weight
        assert (weight == 0).sum().item() / weight.numel() == sparsity
    assert recipe["allocation"]["method"] == FUNCTION and recipe["metric"] == "wanda"
    assert len(recipe["achieved"]["blocks"]) == 3 and recipe["data"]["calib_tokens"] == 512
    assert recipe["perplexity"]["pruned"] == done.perplexity and recipe["versions"]["torch"]


def test_recipe_replay_gives_byte_identical_tensors(tmp_path, tiny_model_dir):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["export", "--model", str(tiny_model_dir), "--function", FUNCTION, "--sparsity", "0.7",
                 "--out", str(first), *TINY]) == 0
    assert main(["export", "--recipe", str(first / "pruning.json"), "--out", str(second), "--quiet"]) == 0
    a, b = tensors(first), tensors(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_replay_uses_the_recorded_batch_size(tmp_path, tiny_model_dir, tiny_data):
    """Calibration sums depend on how the windows are batched; the recipe records the batch size."""
    from engine.loading import load_model
    from engine.session import Session

    model = load_model(str(tiny_model_dir), device="cpu")
    sums = [Session(model, replace(tiny_data, batch_size=b)).calibration().sq_sums for b in (3, 4)]
    assert any(not torch.equal(sums[0][k], sums[1][k]) for k in sums[0])  # batching changes the statistics
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["export", "--model", str(tiny_model_dir), "--function", FUNCTION, "--sparsity", "0.7",
                 "--out", str(first), "--batch-size", "3", *TINY]) == 0
    recipe = read_recipe_file(first)
    assert recipe["data"]["batch_size"] == 3 and recipe["model"]["device"] == "cpu"
    assert main(["export", "--recipe", str(first / "pruning.json"), "--out", str(second), "--quiet"]) == 0
    a, b = tensors(first), tensors(second)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sequential_calibration_is_recorded_and_replayed(tmp_path, tiny_model_dir):
    first, second, dense = tmp_path / "a", tmp_path / "b", tmp_path / "d"
    for out, mode in ((first, "sequential"), (dense, "dense")):
        assert main(["export", "--model", str(tiny_model_dir), "--metric", "sparsegpt", "--sparsity", "0.5",
                     "--calibration", mode, "--out", str(out), *TINY]) == 0
    assert read_recipe_file(first)["calibration"] == "sequential"
    assert main(["export", "--recipe", str(first / "pruning.json"), "--out", str(second), "--quiet"]) == 0
    a, b, d = tensors(first), tensors(second), tensors(dense)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], d[k]) for k in a)  # the pruned prefix changes later blocks' statistics


def test_device_map_loads_and_prunes_the_same(tmp_path, tiny_model_dir):
    outs = []
    for extra in ([], ["--device-map", "auto"]):
        out = tmp_path / f"m{len(extra)}"
        assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), *TINY,
                     *extra]) == 0
        outs.append(tensors(out))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_replay_refuses_another_model(tmp_path, tiny_model_dir):
    out = tmp_path / "a"
    assert main(["export", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), *TINY]) == 0
    recipe = read_recipe_file(out)
    recipe["model"]["fingerprint"] = "folder-sha256:0000"
    with pytest.raises(WorkbenchError, match="not the one the recipe"):
        replay_recipe(recipe, tmp_path / "b", device="cpu")


def test_refuses_to_overwrite_then_force_replaces(tmp_path, tiny_session):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="already exists"):
        export_pruned(tiny_session, "uniform", 0.5, "wanda", out)
    assert (out / "keep.txt").read_text() == "mine"
    export_pruned(tiny_session, "uniform", 0.5, "wanda", out, force=True, evaluate=False)
    assert not (out / "keep.txt").exists() and (out / "pruning.json").is_file()


def test_interrupted_export_leaves_nothing(tmp_path, tiny_session, monkeypatch):
    out = tmp_path / "m"
    tokenizer = tiny_session.loaded.tokenizer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_pruned(tiny_session, "uniform", 0.5, "wanda", out, evaluate=False)
    assert list(tmp_path.iterdir()) == []


def test_kill_9_during_export_leaves_no_output_folder(tmp_path, tiny_model_dir):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "workbench.cli", "export", "--model", str(tiny_model_dir), "--sparsity", "0.5",
           "--out", str(out), "--shard-size", "20KB", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    end = time.monotonic() + 120
    while time.monotonic() < end and not list(tmp_path.glob(".killed.tmp-*/*.safetensors")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".killed.tmp-*")), "the export finished before it could be killed"
    assert not out.exists()
    assert main(["export", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), "--no-eval",
                 *TINY]) == 0
    assert out.is_dir() and not list(tmp_path.glob(".killed.tmp-*"))  # the dead export's leftovers are gone


def test_out_dtype_and_disk_space_check(tmp_path, tiny_session, monkeypatch):
    out = tmp_path / "half"
    export_pruned(tiny_session, "owl", 0.6, "wanda", out, dtype="float16", evaluate=False)
    assert all(t.dtype == torch.float16 for t in tensors(out).values())
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float16
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(WorkbenchError, match="not enough disk space"):
        export_pruned(tiny_session, "owl", 0.6, "wanda", tmp_path / "full", evaluate=False)
    assert not (tmp_path / "full").exists()


def test_export_best_of_a_search_run(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "run"
    assert main(["search", "--model", str(tiny_model_dir), "--run", str(run), "--sparsity", "0.6",
                 "--generations", "1", "--population", "3", "--fitness-tokens", "256", *TINY]) == 0
    best = (run / "best.txt").read_text().strip()
    out = tmp_path / "best"
    assert main(["export", "--from-run", str(run), "--out", str(out), "--device", "cpu", "--quiet", "--json"]) == 0
    recipe = read_recipe_file(out)
    assert recipe["allocation"]["method"] == best and recipe["allocation"]["target"] == 0.6
    assert recipe["calibration"] == "dense"
    assert main(["export", "--from-run", str(run), "--out", str(tmp_path / "seq"), "--calibration", "sequential",
                 "--device", "cpu", "--quiet", "--json"]) == 0
    assert read_recipe_file(tmp_path / "seq")["calibration"] == "sequential"


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_compressed_tensors_layout_decompresses_to_the_pruned_model(tmp_path, tiny_model_dir, pattern):
    from engine.compressed import load_compressed

    out = tmp_path / "ct"
    args = ["--pattern", pattern] if pattern else ["--allocation", "owl", "--sparsity", "0.6"]
    assert main(["export", "--model", str(tiny_model_dir), *args, "--format", "compressed-tensors", "--out", str(out),
                 *TINY]) == 0
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["sparsity_config"]["format"] == ("sparse-24-bitmask" if pattern else "sparse-bitmask")
    stored = tensors(out)
    assert "model.layers.0.mlp.down_proj.bitmask" in stored and "model.layers.0.mlp.down_proj.weight" not in stored
    dense_out = tmp_path / "dense"
    assert main(["export", "--model", str(tiny_model_dir), *args, "--out", str(dense_out), *TINY]) == 0
    expected = tensors(dense_out)
    rebuilt = load_compressed(out, torch.float32).state_dict()
    for name, tensor in expected.items():
        assert torch.equal(rebuilt[name], tensor), name


def test_compressed_tensors_keeps_tied_embeddings(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from engine.compressed import load_compressed, save_compressed

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    save_compressed(model, tmp_path / "tied", 0.0, None, "5GB")
    tokens = torch.randint(0, 128, (1, 8))
    assert torch.equal(load_compressed(tmp_path / "tied", torch.float32)(tokens).logits, model(tokens).logits)


def test_atomic_writes_leave_ordinary_permissions_and_nothing_on_failure(tmp_path):
    # mkstemp and mkdtemp make private temporaries: a recipe, report or model folder to share must not stay so
    import os
    import stat

    from engine.saving import atomic_folder, write_atomic

    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "recipe.yaml", "a: 1\n")
        with atomic_folder(tmp_path / "report") as folder:
            (folder / "report.md").write_text("# r\n")
        with pytest.raises(RuntimeError), atomic_folder(tmp_path / "report") as folder:
            (folder / "report.md").write_text("# half\n")
            raise RuntimeError("killed half-way")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "recipe.yaml").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o755
    assert (tmp_path / "report" / "report.md").read_text() == "# r\n"  # the failed rewrite left the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml", "report"]
