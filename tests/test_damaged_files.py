"""Every load path answers a truncated or corrupt file with one line naming it, and exit code 2."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors.torch import load_file, save_file

from engine.loading import default_gguf
from workbench.cli import main

TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu", "--quiet"]


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    return err[0]


def truncate(path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])


@pytest.fixture
def model_copy(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_truncated_safetensors_as_after_an_interrupted_download(capsys, model_copy):
    truncate(model_copy / "model.safetensors", -1000)
    line = one_line_error(capsys, ["eval", str(model_copy), *TINY])
    assert "model.safetensors is truncated or corrupt" in line


def test_corrupt_header_and_config(capsys, model_copy):
    (model_copy / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert "model.safetensors is truncated or corrupt" in one_line_error(capsys, ["eval", str(model_copy), *TINY])
    (model_copy / "config.json").write_text('{"model_type": "llama", ')
    assert "config.json is truncated or corrupt" in one_line_error(capsys, ["eval", str(model_copy), *TINY])


def test_shard_index_naming_a_missing_shard(capsys, model_copy):
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    line = one_line_error(capsys, ["eval", str(model_copy), *TINY])
    assert "model-00002-of-00002.safetensors is missing" in line


def test_truncated_gguf_file(capsys, tmp_path):
    broken = tmp_path / "model.gguf"
    broken.write_bytes(default_gguf().read_bytes()[:4096])
    line = one_line_error(capsys, ["eval", str(broken), *TINY])
    assert "cannot read GGUF file" in line and "model.gguf" in line


def test_corrupt_run_folder_recipe_and_level_database(capsys, tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    assert main(["search", "--run", str(run), "--model", str(tiny_model_dir), "--sparsity", "0.5", "--population",
                 "2", "--generations", "1", "--fitness-tokens", "256", *TINY]) == 0
    capsys.readouterr()
    lines = (run / "candidates.jsonl").read_text().splitlines()
    (run / "candidates.jsonl").write_text(lines[0] + "\n")
    assert "candidates.jsonl has fewer lines" in one_line_error(capsys, ["search", "--resume", str(run), "--quiet"])
    (run / "state.json").write_text('{"queue": [')
    assert "state.json is not valid JSON" in one_line_error(capsys, ["search", "--resume", str(run), "--quiet"])
    (run / "run.json").write_text(json.dumps({"format": "dsa-workbench/search-run", "version": 1,
                                              "settings": {"sparsity": "lots"}}))
    assert "run.json holds no valid settings" in one_line_error(capsys, ["search", "--resume", str(run), "--quiet"])

    recipe = tmp_path / "pruning.json"
    recipe.write_text(json.dumps({"format": "dsa-workbench/pruning", "model": {}}))
    line = one_line_error(capsys, ["export", "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--quiet"])
    assert "recipe is incomplete or corrupt" in line
    recipe.write_text("garbage")
    assert "pruning.json is not valid JSON" in one_line_error(
        capsys, ["export", "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--quiet"])

    structured = tmp_path / "structured"
    build = ["structured", "build-db", "--run", str(structured), "--model", str(tiny_model_dir), *TINY]
    assert main(build) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert {(p.stat().st_mode & 0o777) for p in (structured / "db").iterdir()} == {0o666 & ~umask}
    export = ["structured", "export", "--run", str(structured), "--out", str(tmp_path / "small"), "--uniform", "0.5",
              "--no-eval", "--quiet"]
    block, index, manifest = (structured / "db" / "block-001.safetensors", structured / "db" / "index.json",
                              structured / "structured.json")
    saved = {path: path.read_bytes() for path in (block, index, manifest)}
    tensors = load_file(block)
    save_file({k: v for k, v in tensors.items() if k != "attn.2.o_proj"}, block)
    line = one_line_error(capsys, export)
    assert "block-001.safetensors lacks 1 of its" in line and f"build-db --run {structured}`" in line
    stale = structured / "db" / ".block-002.safetensors.k7x_"  # a killed build's temporary file
    stale.write_bytes(b"partial")
    assert main(build) == 0  # builds that block again
    assert block.read_bytes() == saved[block] and not stale.exists()
    capsys.readouterr()
    index.write_text(json.dumps({**json.loads(saved[index]), "heads": []}))
    assert "index.json is corrupt: it lacks blocks" in one_line_error(capsys, export)
    manifest.write_text("[]")
    assert "structured.json is corrupt or not a structured run" in one_line_error(capsys, export)
    for path, data in saved.items():
        path.write_bytes(data)
    truncate(structured / "db" / "block-001.safetensors", -64)
    line = one_line_error(capsys, ["structured", "search", "--run", str(structured), "--target-params", "0.5",
                                   "--quiet"])
    assert "block-001.safetensors is truncated or corrupt" in line
    (structured / "db" / "index.json").write_text("{")
    assert "index.json is truncated or corrupt" in one_line_error(
        capsys, ["structured", "search", "--run", str(structured), "--target-params", "0.5", "--quiet"])


@pytest.mark.slow
def test_a_damaged_conversion_cache_is_rebuilt_not_trusted(capsys, tmp_path, monkeypatch):
    from engine.loading import cache_dir, load_model

    first = load_model(None, device="cpu")  # converted once into the user's cache (the other tests' copy)
    converted = next(f for f in (cache_dir() / "models").iterdir() if f.name.startswith(default_gguf().stem + "-"))
    folder = tmp_path / "cache" / "models" / converted.name
    shutil.copytree(converted, folder)
    monkeypatch.setenv("DSA_WORKBENCH_CACHE", str(tmp_path / "cache"))
    shard = next(folder.glob("*.safetensors"))
    truncate(shard, -4096)
    messages = []
    second = load_model(None, device="cpu", status=messages.append)
    assert any("cannot be used" in m and shard.name in m and "converting again" in m for m in messages)
    assert second.fingerprint == first.fingerprint
    name, weight = next(iter(first.model.state_dict().items()))
    assert (second.model.state_dict()[name] == weight).all()
    # a copy converted before the tokenizer check (perhaps by a transformers that builds it wrongly) is not reused
    source = json.loads((folder / "source.json").read_text())
    (folder / "source.json").write_text(json.dumps({k: v for k, v in source.items() if k != "tokenizer_checked"}))
    messages.clear()
    load_model(None, device="cpu", status=messages.append)
    assert any("tokenizer was never checked" in m and "converting again" in m for m in messages)
    assert json.loads((folder / "source.json").read_text())["tokenizer_checked"] is True
