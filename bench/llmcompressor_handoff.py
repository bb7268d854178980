"""A search's best allocation handed to llm-compressor: our export of it against llm-compressor's `oneshot` running
the recipe that `dsa-workbench recipe` writes, on the default model, with the same calibration windows.

    python bench/llmcompressor_handoff.py [--run bench/results/anytime/default/evopress-1] [--python PY]

`--python`: a Python with llm-compressor 0.14.0.1 (default .venv-llmcompressor/bin/python, which the test suite
builds). Writes bench/results/llmcompressor_handoff.json: per linear the ratio of the recipe, the sparsity of our
export and of llm-compressor's model, and the held-out perplexity of each folder (`dsa-workbench eval`): ours with
dense statistics (our default) and block by block (as llm-compressor's sequential pipeline calibrates).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.loading import load_model  # noqa: E402
from engine.saving import write_atomic  # noqa: E402
from engine.session import Session  # noqa: E402
from workbench.sessions import run_best  # noqa: E402

ONESHOT = textwrap.dedent("""
    import sys, time
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, recipe, windows, out = sys.argv[1:]
    ids = torch.load(windows)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    t0 = time.perf_counter()
    oneshot(model=model, dataset=Dataset.from_dict({"input_ids": ids.tolist()}), recipe=recipe,
            num_calibration_samples=len(ids), max_seq_length=ids.shape[1], pipeline="independent")
    print(f"oneshot: {time.perf_counter() - t0:.0f} s", flush=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
""")


def cli(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "workbench.cli", *argv, "--json", "--quiet"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dsa-workbench {' '.join(argv)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def sparsity(folder: Path, names: list[str]) -> dict[str, float]:
    from safetensors import safe_open

    out = {}
    for shard in folder.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            for key in f.keys():
                name = key.removesuffix(".weight")
                if name in names:
                    out[name] = (f.get_tensor(key) == 0).float().mean().item()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(ROOT / "bench/results/anytime/default/evopress-1"))
    p.add_argument("--python", default=str(ROOT / ".venv-llmcompressor/bin/python"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="handoff-") as work:  # three model folders: gone when measured
        result = handoff(args, Path(work))
    write_atomic(ROOT / "bench/results/llmcompressor_handoff.json", json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "linears"}, indent=1))


def handoff(args, work: Path) -> dict:
    """Recipe, our two exports and llm-compressor's oneshot of the run's best, in `work`, compared."""
    settings, best = run_best(args.run)
    recipe = work / "recipe.yaml"
    cli("recipe", "--from-run", args.run, "--out", str(recipe))
    modifier = yaml.safe_load(recipe.read_text())["pruning_stage"]["pruning_modifiers"]
    t0 = time.perf_counter()
    ours = cli("export", "--from-run", args.run, "--out", str(work / "ours"))
    ours_seconds = time.perf_counter() - t0
    sequential = cli("export", "--from-run", args.run, "--out", str(work / "ours-sequential"), "--calibration",
                     "sequential")  # block by block on the pruned model's outputs, as llm-compressor's pipeline
    loaded = load_model(settings.model)
    session = Session(loaded, settings.data)
    windows = session.windows("calibration")  # the windows our export calibrated on
    torch.save(windows, work / "windows.pt")
    folder = Path(loaded.model.name_or_path)  # the converted default model (a safetensors folder)
    t0 = time.perf_counter()
    done = subprocess.run([args.python, "-c", ONESHOT, str(folder), str(recipe), str(work / "windows.pt"),
                           str(work / "llmcompressor")], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"oneshot failed: {done.stderr[-2000:]}")
    theirs_seconds = time.perf_counter() - t0
    theirs = cli("eval", str(work / "llmcompressor"))
    ratios = session.allocate(best, settings.sparsity, settings.metric).linear_ratios
    names = list(ratios)
    ours_sparsity, theirs_sparsity = sparsity(work / "ours", names), sparsity(work / "llmcompressor", names)
    columns = {n: session.loaded.model.get_submodule(n).weight.shape[1] for n in names}
    expected = {n: int(columns[n] * ratios[n]) / columns[n] for n in names}  # its Wanda keeps int(cols x r) a row
    gap = max(abs(theirs_sparsity[n] - expected[n]) for n in names)
    return {"run": os.path.relpath(args.run, ROOT),
              "allocation": best, "target": settings.sparsity, "metric": settings.metric,
              "recipe": {"modifiers": list(modifier), "values": len(next(iter(modifier.values()))["sparsity"])},
              "largest_sparsity_gap_to_recipe": gap,
              "held_out_perplexity": {"ours": ours["perplexity"], "ours_sequential": sequential["perplexity"],
                                      "llmcompressor": theirs["perplexity"], "dense": ours["dense_perplexity"]},
              "seconds": {"ours_export": ours_seconds, "llmcompressor_oneshot": theirs_seconds},
              "calibration": {"windows": list(windows.shape), "mode": "ours: dense statistics, and block by block "
                              "(ours_sequential); llm-compressor: its independent pipeline (Wanda's sequential one)"},
              "linears": {n: {"ratio": ratios[n], "ours": ours_sparsity[n], "llmcompressor": theirs_sparsity[n]}
                          for n in names}}


if __name__ == "__main__":
    main()
