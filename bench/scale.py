"""How memory and time grow with the model: the default model and random-weight Llamas of about 0.5B and
1B parameters (SmolLM2's tokenizer and vocabulary), on this machine's CPU.

    python bench/scale.py [--models default,0.5b,1b] [--candidates 2]

Each model runs in a fresh process (so its peak resident memory is its own): load, dense calibration,
the search caches (weight ranks, block samples), a few search candidates, then a block-sequential Wanda
prune. Printed per model: the memory plan's peak against the measured peak (resident memory), the
calibration time per parameter and token, and the candidate time per parameter and token: these ratios
must stay flat as the model grows, and the plan within 15% of the measured peak. Results go to
bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SHAPES = {  # random-weight Llamas with SmolLM2's vocabulary
    "0.5b": dict(hidden_size=1152, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=4),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
}
DATA = dict(seqlen=512, calib_tokens=4096, fitness_tokens=2048, eval_tokens=2048, batch_size=4)


def random_model(name: str) -> str:
    """A saved random-weight Llama with SmolLM2's tokenizer (made once, in the workbench cache)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.loading import _converted_gguf, cache_dir, default_gguf

    folder = cache_dir() / "bench-models" / f"random-llama-{name}"
    if (folder / "config.json").is_file():
        return str(folder)
    smollm, _ = _converted_gguf(default_gguf(), print)
    tokenizer = AutoTokenizer.from_pretrained(smollm)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=8192,
                         **SHAPES[name])
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def timings(source: str | None, candidates: int) -> dict:
    """Calibration and candidate times, in this (fresh) process."""
    import random

    from engine.data_config import DataConfig
    from engine.loading import load_model
    from engine.search.evaluator import SessionEvaluator
    from engine.search.genome import random_function
    from engine.session import Session

    session = Session(load_model(source, device="cpu"), DataConfig(**DATA))
    t0 = time.perf_counter()
    session.calibration()
    calib_s = time.perf_counter() - t0
    evaluator = SessionEvaluator(session, 0.6, "wanda", "ppl")
    evaluator.prepare(lambda *a: None)
    rng, times = random.Random(0), []
    while len(times) < candidates:
        outcome = evaluator.evaluate_one(str(random_function(rng)), lambda *a: None)
        if outcome.fitness is not None:
            times.append(outcome.seconds)
    weights = sum(p.numel() * p.element_size() for p in {id(p): p for p in session.model.parameters()}.values())
    return {"params": sum(p.numel() for p in {id(p): p for p in session.model.parameters()}.values()),
            "weight_bytes": weights, "calibration_s": calib_s, "candidate_s": sorted(times)[len(times) // 2],
            "caches": session.cache_bytes()}


COMMANDS = {  # what is measured: the real commands, each in its own process
    "search": ["search", "--sparsity", "0.6", "--population", "3", "--generations", "1"],
    "prune (sequential SparseGPT)": ["prune", "--sparsity", "0.6", "--metric", "sparsegpt", "--calibration",
                                     "sequential", "--no-eval"],
}


def memory(source: str | None, name: str, tmp: Path) -> dict:
    """Per command: the plan's peak (dsa-workbench plan) and the measured peak resident memory."""
    model = [] if source is None else ["--model", source]
    data = [f"--{k.replace('_', '-')}={v}" for k, v in DATA.items()]
    out = {}
    for label, argv in COMMANDS.items():
        command = argv[0]
        extra = ["--metric", "sparsegpt", "--calibration", "sequential"] if "sparsegpt" in argv else []
        planned = subprocess.run([sys.executable, "-m", "workbench.cli", "plan", "--command", command, "--device",
                                  "cpu", "--json", *model, *extra, *data], capture_output=True, text=True, check=True,
                                 cwd=ROOT)
        plan = json.loads(planned.stdout)
        where = ["--run", str(tmp / f"{name}-run")] if command == "search" else ["--out", str(tmp / f"{name}-out")]
        if command == "search":
            data_args = data
        else:
            data_args = [d for d in data if not d.startswith("--fitness")]
        run = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "workbench.cli", *argv, "--device",
                              "cpu", "--quiet", *model, *where, *data_args], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        measured = int(run.stderr.strip().splitlines()[-1]) * 1024
        out[label] = {"plan_bytes": max(p["host_bytes"] for p in plan["phases"]), "measured_bytes": measured,
                      "phases": {p["name"]: p["host_bytes"] for p in plan["phases"]}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="default,0.5b,1b")
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--timings", default=None, help=argparse.SUPPRESS)  # the worker process
    args = p.parse_args()
    if args.timings is not None:
        print(json.dumps(timings(None if args.timings == "default" else args.timings, args.candidates)))
        return
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            source = None if name == "default" else random_model(name)
            out = subprocess.run([sys.executable, __file__, "--timings", source or "default", "--candidates",
                                  str(args.candidates)], capture_output=True, text=True, check=True, cwd=ROOT)
            row = {"model": name, **json.loads(out.stdout.strip().splitlines()[-1]),
                   "memory": memory(source, name, Path(tmp))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | parameters | calibration s / (Gparam x ktoken) | candidate s / (Gparam x ktoken) | "
          + " | ".join(f"{c}: plan / measured peak" for c in COMMANDS) + " |")
    print("|---|---|---|---|" + "---|" * len(COMMANDS))
    for r in rows:
        calib = r["calibration_s"] / (r["params"] / 1e9) / (DATA["calib_tokens"] / 1e3)
        cand = r["candidate_s"] / (r["params"] / 1e9) / (DATA["fitness_tokens"] / 1e3)
        cells = [f"{m['plan_bytes'] / 2**30:.2f} / {m['measured_bytes'] / 2**30:.2f} GiB "
                 f"({m['plan_bytes'] / m['measured_bytes'] - 1:+.0%})" for m in r["memory"].values()]
        print(f"| {r['model']} | {r['params'] / 1e9:.2f}B | {calib:.2f} | {cand:.2f} | " + " | ".join(cells) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps({"data": DATA, "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
