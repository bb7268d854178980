"""Structured (DarwinLM-style) pruning on a tiny Llama: levels, database, compact model, search, export."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import WorkbenchError
from engine.structured.compact import build_compact, parameter_count
from engine.structured.database import build_database, estimate_bytes
from engine.structured.finetune import finetune
from engine.structured.run import RunSource, StructuredRun, Workspace, build_run_database
from engine.structured.structure import Shapes, Structure, mutate, uniform
from waiting import scaled
from workbench.cli import main

TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu"]
STAGES = "3:128:128,1:256:256"


def shapes_strategy():
    return st.builds(Shapes, layers=st.integers(2, 12), hidden=st.just(64), heads=st.sampled_from([2, 4, 8, 9]),
                     kv_heads=st.just(1), head_dim=st.just(8), intermediate=st.integers(8, 300),
                     mlp_levels=st.integers(1, 20))


@settings(max_examples=200, deadline=None)
@given(shapes_strategy(), st.floats(0.05, 0.95), st.integers(0, 2**32 - 1))
def test_every_mutation_conserves_the_attention_and_mlp_budgets(shapes, keep, seed):
    rng = random.Random(seed)
    start = uniform(shapes, keep)
    start.check(shapes)
    assert max(start.attn) - min(start.attn) <= 1 and max(start.mlp) - min(start.mlp) <= 1
    current = start
    for _ in range(20):
        current = mutate(current, shapes, rng)
        current.check(shapes)
        assert sum(current.attn) == sum(start.attn) and sum(current.mlp) == sum(start.mlp)
        assert Structure.parse(str(current), shapes) == current


def test_structures_from_text_are_checked():
    shapes = Shapes(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128)
    for bad in ("attn 1 2 / mlp 3", "attn 1 9 / mlp 0 0", "heads 1 1 / mlp 1 1", "attn 1 1"):
        with pytest.raises(WorkbenchError):
            Structure.parse(bad, shapes)


def test_only_llama_without_biases_is_supported():
    from transformers import LlamaConfig, Qwen2Config

    with pytest.raises(WorkbenchError, match="Llama models only"):
        Shapes.of(Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(WorkbenchError, match="biases"):
        Shapes.of(LlamaConfig(hidden_size=64, num_attention_heads=4, attention_bias=True))


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir, tiny_data):
    from engine.loading import load_model
    from engine.session import Session

    session = Session(load_model(str(tiny_model_dir), device="cpu"), tiny_data)
    folder = tmp_path_factory.mktemp("structured") / "run"
    db = build_run_database(folder, RunSource(str(tiny_model_dir), tiny_data), session=session)
    return session, db, folder


def test_database_build_is_deterministic_and_matches_its_estimate(built, tmp_path):
    session, db, _ = built
    again = build_database(session, tmp_path / "db", db.shapes)
    names = sorted(p.name for p in db.folder.iterdir())
    assert names == sorted(p.name for p in again.folder.iterdir())
    for name in names:
        assert (db.folder / name).read_bytes() == (again.folder / name).read_bytes(), name
    blocks = sum(p.stat().st_size for p in db.folder.glob("block-*"))
    assert 0.9 < blocks / estimate_bytes(db.shapes, 4) < 1.1


def test_levels_are_nested_and_obs_beats_dropping_columns(built):
    session, db, _ = built
    stats = session.calibration(hessians=True)
    for level in range(1, db.shapes.heads + 1):
        assert set(db.heads[0][level]) <= set(db.heads[0][level - 1])
    name = "model.layers.1.mlp.down_proj"
    dense = session.dense_weight(name).double()
    h = stats.hessians[name].double()
    kept, updated = db.weights(1, "mlp", 5)
    obs = torch.zeros_like(dense)
    obs[:, kept] = updated.double()
    dropped = torch.zeros_like(dense)
    dropped[:, kept] = dense[:, kept]
    error = lambda w: torch.trace((w - dense) @ h @ (w - dense).T).item()  # noqa: E731
    assert error(obs) < 0.9 * error(dropped)


def test_compact_model_equals_the_dense_model_with_pruned_units_zeroed(built):
    session, db, _ = built
    x = session.windows("fitness")[:2]
    full = Structure((0,) * db.shapes.layers, (0,) * db.shapes.layers)
    with torch.no_grad():
        assert torch.equal(build_compact(session.model, db, full)(x).logits, session.model(x).logits)
    structure = Structure((3, 0, 4), (10, 2, 7))  # whole attention and MLP of a block removed
    compact = build_compact(session.model, db, structure)
    masked = build_compact(session.model, db, full)
    hd = db.shapes.head_dim
    with torch.no_grad():
        for i, (a, m) in enumerate(zip(structure.attn, structure.mlp)):
            layer = masked.model.layers[i]
            heads, o_proj = db.weights(i, "attn", a)
            cols = (heads[:, None] * hd + torch.arange(hd)).flatten()
            layer.self_attn.o_proj.weight.zero_()
            layer.self_attn.o_proj.weight[:, cols] = o_proj
            neurons, down = db.weights(i, "mlp", m)
            layer.mlp.down_proj.weight.zero_()
            layer.mlp.down_proj.weight[:, neurons] = down
        assert torch.allclose(compact(x).logits, masked(x).logits, atol=1e-5)
    assert parameter_count(compact) < parameter_count(session.model)
    assert sum(db.block_params(structure)) == sum(
        lin.weight.numel() for layer in compact.model.layers
        for lin in (*[getattr(layer.self_attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")],
                    layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj))


def test_a_level_database_built_for_other_shapes_is_refused(built):
    session, db, _ = built
    other = copy.copy(db)
    other.shapes = dataclasses.replace(db.shapes, intermediate=2 * db.shapes.intermediate)
    with pytest.raises(WorkbenchError, match="other shapes than the loaded one"):
        Workspace(session, other)


def test_finetune_lowers_the_training_loss_and_leaves_the_dense_model_alone(built):
    session, db, _ = built
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    workspace = Workspace(session, db, lr=1e-3)
    compact = workspace.compact(uniform(db.shapes, 0.5))
    windows = workspace.windows("calibration", 512, "fine-tune")
    with pytest.raises(WorkbenchError, match="less than one window"):
        workspace.windows("calibration", 32, "fine-tune")
    first = finetune(compact, windows, lr=1e-3)
    second = finetune(compact, windows, lr=1e-3)
    assert second < first
    assert all(torch.equal(v, session.model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(WorkbenchError, match="learning rate"):
        finetune(compact, windows, lr=float("nan"))


def test_a_bfloat16_model_keeps_its_rope_and_its_fine_tune_moves_like_a_float32_one(built, tiny_model_dir):
    """A compact copy of a bfloat16 model (the GPU default) keeps RoPE's float32 frequencies (cast, they turned
    every position's angle, even with nothing pruned) and fine-tunes through float32 master weights (stepped in
    bfloat16, most of lr 1e-5's updates were rounded away)."""
    from transformers import AutoModelForCausalLM

    session, db, _ = built
    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    x = session.windows("fitness")[:2]
    full = Structure((0,) * db.shapes.layers, (0,) * db.shapes.layers)
    compact = build_compact(dense, db, full)
    assert compact.model.rotary_emb.inv_freq.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(compact(x).logits, dense(x).logits)
    windows = session.windows("calibration")
    structure = uniform(db.shapes, 0.5)
    moved = {}
    for model in (session.model, dense):
        pruned = build_compact(model, db, structure)
        before = [p.detach().float().clone() for p in pruned.parameters()]
        finetune(pruned, windows, lr=1e-5, batch_size=1)
        moved[model.dtype] = torch.cat([(p.detach().float() - b).flatten()
                                        for p, b in zip(pruned.parameters(), before)]).norm().item()
    assert moved[torch.bfloat16] > 0.8 * moved[torch.float32] > 0  # 0.93 (0.38 stepped in bfloat16)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_decoding_token_by_token_with_the_cache_equals_one_forward_when_block_0_keeps_no_head(built, cache):
    from transformers import StaticCache

    session, db, _ = built
    compact = build_compact(session.model, db, Structure((db.shapes.heads, 1, 2), (3, 10, 0)))
    x = session.windows("evaluation")[:1, :12]
    past = StaticCache(config=compact.config, max_cache_len=16) if cache == "static" else None
    with torch.no_grad():
        out = compact(x[:, :8], None, None, past, use_cache=True)  # the cache's keyword differs across versions
        assert out.past_key_values.get_seq_length() == 8
        steps = [out.logits]
        for t in range(8, 12):
            out = compact(x[:, t:t + 1], None, None, out.past_key_values, use_cache=True)
            steps.append(out.logits)
        assert torch.allclose(torch.cat(steps, 1), compact(x).logits, atol=1e-5)


def test_export_reloads_with_auto_classes_and_gives_the_same_logits(built, tmp_path):
    from transformers import AutoModelForCausalLM

    from engine.structured.export import export_structure

    session, db, _ = built
    workspace = Workspace(session, db)
    structure = Structure((1, 4, 2), (3, 10, 0))
    done = export_structure(workspace, structure, tmp_path / "out", evaluate=False)
    config = json.loads((done.path / "config.json").read_text())
    assert config["model_type"] == "dsa_pruned_llama" and "auto_map" not in config
    assert config["layer_intermediate_sizes"] == [db.shapes.kept_neurons(m) for m in structure.mlp]
    reloaded = AutoModelForCausalLM.from_pretrained(done.path)
    x = session.windows("evaluation")[:2]
    with torch.no_grad():
        assert torch.equal(reloaded(x).logits, workspace.compact(structure)(x).logits)
    assert parameter_count(reloaded) == done.params < done.dense_params
    generated = reloaded.generate(x[:1, :8], max_new_tokens=4, do_sample=False)  # KV cache with uneven heads
    assert generated.shape == (1, 12)
    # a fresh interpreter: `import engine.structured` is all it takes, no remote code
    code = (f"import engine.structured, torch; from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({str(done.path)!r}); print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "PrunedLlamaForCausalLM"


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def cli_search(run, *extra):
    return [sys.executable, "-m", "workbench.cli", "structured", "search", "--run", str(run), "--target-params",
            "0.5", "--generations", "3", "--offspring", "4", "--stages", STAGES, "--lr", "1e-3", "--device", "cpu",
            "--quiet", *extra]


@pytest.fixture(scope="module")
def searched(built, tmp_path_factory):
    _, _, folder = built
    run = tmp_path_factory.mktemp("searched") / "run"
    shutil.copytree(folder, run)
    subprocess.run(cli_search(run), check=True, capture_output=True, env=_env())
    return run


@pytest.mark.slow
def test_search_log_keeps_budgets_stages_and_no_duplicates(searched, built):
    _, db, _ = built
    log = StructuredRun(searched).store.candidates()
    start = uniform(db.shapes, 0.5)
    structures = [Structure.parse(c.text, db.shapes) for c in log]
    assert all(sum(s.attn) == sum(start.attn) and sum(s.mlp) == sum(start.mlp) for s in structures)
    for generation in range(3):
        rows = [c for c in log if c.generation == generation]
        first, second = [c for c in rows if c.stage == 0], [c for c in rows if c.stage == 1]
        # generation 0 scores the parent and 4 offspring; later ones find the parent's scores cached
        assert len(first) == (5 if generation == 0 else 4) and 2 <= len(second) <= 3
        assert {c.text for c in second} <= {c.text for c in first} | {c.text for c in log if c.generation < generation}
    offspring = [c.text for c in log if c.stage == 0]
    assert len(set(offspring)) == len(offspring)  # duplicates are never scored again
    state = json.loads((searched / "state.json").read_text())
    final = json.loads((searched / "final.json").read_text())
    assert state["done"] and set(final["held_out_perplexity"]) == {"uniform", "searched"}
    assert (searched / "best.txt").read_text().strip() == state["best"]["text"]


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_search(built, searched, tmp_path):
    _, _, folder = built
    run = tmp_path / "killed"
    shutil.copytree(folder, run)
    proc = subprocess.Popen(cli_search(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    log = run / "candidates.jsonl"
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 6):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final.json").exists(), "the search finished before it could be killed"
    resume = [sys.executable, "-m", "workbench.cli", "structured", "search", "--run", str(run), "--resume",
              "--device", "cpu", "--quiet"]
    subprocess.run(resume, check=True, capture_output=True, env=_env())
    rows = lambda r: [(c.text, c.stage, c.fitness) for c in StructuredRun(r).store.candidates()]  # noqa: E731
    assert rows(run) == rows(searched)
    assert json.loads((run / "final.json").read_text()) == json.loads((searched / "final.json").read_text())


@pytest.mark.slow
def test_a_cluster_of_two_workers_gives_the_single_device_search(built, tmp_path):
    """CPU workers compute with the one core Ray gives each: the single-device run they equal uses one
    thread too (float reductions depend on how many threads split them)."""
    _, _, folder = built
    single, cluster = tmp_path / "single", tmp_path / "cluster"
    for run in (single, cluster):
        shutil.copytree(folder, run)
    subprocess.run(cli_search(single), check=True, capture_output=True, env={**_env(), "OMP_NUM_THREADS": "1"})
    subprocess.run(cli_search(cluster, "--cluster", "local", "--workers", "2"), check=True, capture_output=True,
                   env=_env())
    rows = lambda r: [(c.text, c.stage, c.fitness) for c in StructuredRun(r).store.candidates()]  # noqa: E731
    assert rows(cluster) == rows(single)
    assert json.loads((cluster / "final.json").read_text()) == json.loads((single / "final.json").read_text())


def test_stop_during_a_fine_tune_responds_within_a_second(built, tmp_path):
    import threading

    from engine.search.controller import SearchController
    from engine.search.core import attempt
    from engine.structured.search import StructuredSearch, StructuredSettings, parse_stages

    session, db, _ = built
    store = StructuredRun(tmp_path).store
    settings = StructuredSettings(generations=2, offspring=2, stages=parse_stages("1:4096:128"), lr=1e-4)
    workspace = Workspace(session, db, 1e-4)
    in_finetune = threading.Event()

    def evaluate(structure, finetune_tokens, fitness_tokens, check):
        def watched(stage, done, total):
            if stage == "fine-tune":
                in_finetune.set()
            check(stage, done, total)
        return workspace.evaluate(structure, finetune_tokens, fitness_tokens, watched)

    class Scorer:
        workers = 1

        def evaluate(self, texts, check, stage):
            return [attempt(lambda: (evaluate(Structure.parse(t, db.shapes), 4096, 128, check), ())) for t in texts]

    controller = SearchController(lambda control: StructuredSearch(settings, db.shapes, store, Scorer()), store,
                                  lambda e: None)
    controller.start()
    assert in_finetune.wait(scaled(60))
    t0 = time.monotonic()
    controller.stop()
    assert controller.join(scaled(5)) and time.monotonic() - t0 < scaled(1.0)
    assert controller.state == "stopped" and controller.result is None and not store.candidates()


def test_cli_build_search_export_and_errors(capsys, tmp_path, tiny_model_dir):
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["structured", "search", "--run", str(run), "--target-params", "0.5", "--quiet"]) == 2
    assert "build-db" in capsys.readouterr().err
    assert main(["structured", "build-db", "--run", str(run), "--model", str(tiny_model_dir), "--json", "--quiet",
                 *TINY]) == 0
    assert json.loads(capsys.readouterr().out)["blocks"] == 3
    assert main(["structured", "export", "--run", str(run), "--out", str(out), "--quiet"]) == 2
    assert "no searched structure" in capsys.readouterr().err
    assert main(["structured", "search", "--run", str(run), "--target-params", "1.5", "--quiet"]) == 2
    assert "(0, 1)" in capsys.readouterr().err
    assert main(["structured", "search", "--run", str(run), "--target-params", "0.5", "--stages", "2:64:64,2:64:64",
                 "--quiet"]) == 2
    assert "decrease to 1" in capsys.readouterr().err
    assert main(["structured", "search", "--run", str(run), "--target-params", "0.5", "--stages", "1:0:32",
                 "--quiet"]) == 2
    assert "less than one window" in capsys.readouterr().err
    assert not (run / "run.json").exists()  # a refused search leaves nothing to resume
    assert main(["structured", "export", "--run", str(run), "--out", str(out), "--uniform", "0.5",
                 "--finetune-tokens", "128", "--lr", "1e-3", "--json", "--quiet", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] < result["dense_params"] and result["perplexity"] > 1
    recipe = json.loads((out / "pruning.json").read_text())
    assert recipe["finetune"] == {"tokens": 128, "lr": 1e-3}
    assert main(["eval", str(out), "--quiet", "--json", *TINY]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] == pytest.approx(result["perplexity"], rel=1e-5)
    assert main(["structured", "export", "--run", str(run), "--out", str(out), "--uniform", "0.5", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["structured", "build-db", "--run", str(run), "--model", str(tiny_model_dir), "--quiet",
                 "--seqlen", "32", "--device", "cpu"]) == 2
    assert "another model, data or level settings" in capsys.readouterr().err


def test_generation_counts_and_the_best_record_name_the_log_as_it_is(tmp_path):
    """Each GenerationDone counts the first stage's scored and rejected candidates (the parent among the scored),
    and a new best's record is the log row where it won its last stage."""
    from engine.search import events as ev
    from engine.search.control import Control
    from engine.search.store import RunStore
    from engine.structured.search import StructuredSearch, StructuredSettings
    from fake_engine import SHAPES, SlowScores, StructuredScores, _samples

    seen = []
    store = RunStore(tmp_path / "run", "structured")
    settings = StructuredSettings(target=0.5, generations=4, offspring=6, stages="3:64:32,1:128:64")
    search = StructuredSearch(settings, SHAPES, store, StructuredScores(SlowScores(0.0, _samples())),
                              on_event=seen.append)
    search.run(Control())
    log = store.candidates()
    done = [e for e in seen if isinstance(e, ev.GenerationDone)]
    assert len(done) == 4
    for event in done:
        first = [c for c in log if c.generation == event.generation and c.stage == 0]
        rejected = sum(c.fitness is None for c in first)
        cached_parent = 0 if event.generation == 0 else 1
        assert (event.scored, event.rejected) == (len(first) - rejected + cached_parent, rejected)
    assert sum(e.rejected for e in done) > 0  # the fake rejects a quarter of them
    bests = [e.candidate for e in seen if isinstance(e, ev.NewBest)]
    assert bests
    for best in bests:
        row = log[best.index]
        assert (row.text, row.stage, row.fitness) == (best.text, 1, best.fitness)
