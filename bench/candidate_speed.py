"""Seconds per search candidate: cached evaluation vs. re-running the pruner from scratch.

    python bench/candidate_speed.py [--candidates 6] [--scratch 2]

From scratch is what the public DSA code does per candidate: load the model, run calibration,
score every weight, prune, then the fitness forward. The cached path (what `dsa-workbench search`
does) reuses calibration, block samples, dense weights and per-row score orders, so a candidate is:
evaluate the function, rebuild masks from the cached order, one masked forward. Both use the same
token counts and the same candidates; the script prints both times, their ratio, the share of the
cached candidate time spent outside the masked forward, and the memory the caches hold.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data_config import DataConfig  # noqa: E402
from engine.errors import WorkbenchError  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.search.genome import random_function  # noqa: E402
from engine.session import Session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def valid_functions(session: Session, n: int, sparsity: float) -> list[str]:
    rng, out = random.Random(0), []
    while len(out) < n:
        text = str(random_function(rng))
        try:
            session.allocate(text, sparsity)
        except WorkbenchError:
            continue
        out.append(text)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=6, help="candidates timed on the cached path")
    p.add_argument("--scratch", type=int, default=2, help="candidates timed from scratch (slow)")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--calib-tokens", type=int, default=DataConfig().calib_tokens)
    p.add_argument("--fitness-tokens", type=int, default=DataConfig().fitness_tokens)
    args = p.parse_args()
    data = DataConfig(calib_tokens=args.calib_tokens, fitness_tokens=args.fitness_tokens)

    session = Session(load_model(None), data)
    t0 = time.perf_counter()
    session.prune(session.allocate("uniform", args.sparsity), "wanda")  # builds every cache once
    session.windows("fitness")
    setup = time.perf_counter() - t0
    texts = valid_functions(session, max(args.candidates, args.scratch), args.sparsity)
    print(f"model {session.loaded.label} on {session.loaded.device}; calibration {data.calib_tokens} tokens, "
          f"fitness {data.fitness_tokens} tokens; one-off cache build {setup:.1f} s", flush=True)

    outside, forward = [], []
    for text in texts[: args.candidates]:
        t0 = time.perf_counter()
        session.prune(session.allocate(text, args.sparsity), "wanda")
        t1 = time.perf_counter()
        session.perplexity("fitness")
        t2 = time.perf_counter()
        outside.append(t1 - t0)
        forward.append(t2 - t1)
    cached = (sum(outside) + sum(forward)) / len(outside)
    print(f"cached: {cached:.2f} s/candidate (function + masks {sum(outside) / len(outside):.2f} s, "
          f"masked forward {sum(forward) / len(forward):.2f} s)", flush=True)

    scratch_times = []
    for text in texts[: args.scratch]:
        t0 = time.perf_counter()
        fresh = Session(load_model(None), data)
        fresh.prune(fresh.allocate(text, args.sparsity), "wanda")
        fresh.perplexity("fitness")
        scratch_times.append(time.perf_counter() - t0)
        del fresh
    scratch = sum(scratch_times) / len(scratch_times)
    print(f"from scratch: {scratch:.2f} s/candidate", flush=True)

    share = sum(outside) / (sum(outside) + sum(forward))
    memory = session.cache_bytes()
    print()
    print(f"speed-up of the cached path: {scratch / cached:.1f}x  (target >= 10x)")
    print(f"share of cached candidate time outside the masked forward: {share:.1%}  (target < 20%)")
    print("cache memory: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in memory.items()) +
          f"; total {sum(memory.values()) / 2**20:.0f} MiB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "candidate_speed.json").write_text(json.dumps({
        "calib_tokens": data.calib_tokens, "fitness_tokens": data.fitness_tokens, "sparsity": args.sparsity,
        "cache_build_s": setup, "cached_s": cached, "outside_forward_s": sum(outside) / len(outside),
        "scratch_s": scratch, "speedup": scratch / cached, "cache_bytes": memory}, indent=2) + "\n")


if __name__ == "__main__":
    main()
