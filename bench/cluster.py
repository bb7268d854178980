"""Candidates on Ray workers against one device, on the default model (2 CPU cores here).

    python bench/cluster.py [--population 10 --generations 2]

Runs the same search (20 candidates by default) four ways: on this process's model with one thread
(what a CPU worker with one core computes, so the logs must be equal), with --cluster local and 1 and 2
workers, and with 2 workers one of which is killed (ray.kill) in the middle. Prints wall times,
candidates per minute and whether each log equals the single-device one; writes bench/results/cluster.json.
On a GPU box: `dsa-workbench search --model ./Llama-3.1-8B --cluster local --run runs/s70` (one worker per GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def log(run: Path) -> list[tuple]:
    return [(r["text"], r["fitness"], r["reason"]) for r in map(json.loads, (run / "candidates.jsonl").open())]


def search(run: Path, settings, cluster: str | None, workers: int | None, kill_at: int | None = None) -> dict:
    from engine.search import events as ev
    from engine.search.start import search_controller

    seen, stamps = [], []

    def on_event(event):
        seen.append(event)
        if isinstance(event, (ev.CandidateStarted, ev.CandidateScored, ev.CandidateRejected)):
            stamps.append(time.perf_counter())
        scored = sum(isinstance(e, (ev.CandidateScored, ev.CandidateRejected)) for e in seen)
        if kill_at is not None and isinstance(event, (ev.CandidateScored, ev.CandidateRejected)) and scored == kill_at:
            import ray

            ray.kill(controller.search.evaluator.actors[0])

    t0 = time.perf_counter()
    controller = search_controller(str(run), settings, cluster=cluster, workers=workers, device="cpu",
                                   on_event=on_event)
    controller.start()
    controller.join(7200)
    wall = time.perf_counter() - t0
    workers_seen = [e for e in seen if isinstance(e, ev.WorkersChanged)]
    return {"state": controller.state, "wall_s": wall, "candidates": controller.evaluated,
            "candidates_s": stamps[-1] - stamps[0],  # from the first candidate sent to the last one scored
            "workers_failed": workers_seen[-1].failed if workers_seen else 0,
            "workers_at_end": workers_seen[-1].total if workers_seen else 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--calib-tokens", type=int, default=8192)
    args = p.parse_args()
    import torch

    from engine.data_config import DataConfig
    from engine.search.search import SearchSettings

    torch.set_num_threads(1)  # as a CPU worker with one core
    settings = SearchSettings(sparsity=0.7, population=args.population, generations=args.generations,
                              data=DataConfig(calib_tokens=args.calib_tokens))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, cluster, workers, kill in (("one device, 1 thread", None, None, None),
                                             ("cluster local, 1 worker", "local", 1, None),
                                             ("cluster local, 2 workers", "local", 2, None),
                                             ("cluster local, 2 workers, one killed", "local", 2,
                                              args.population)):
            run = tmp / name.replace(" ", "-").replace(",", "")
            shutil.rmtree(run, ignore_errors=True)
            row = search(run, settings, cluster, workers, kill)
            row["log_equals_one_device"] = log(run) == log(tmp / "one-device-1-thread")
            rows[name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
    print("\n| run | wall time | of it scoring candidates | candidates / min | log equals one device |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.0f} s | {r['candidates_s']:.0f} s | "
              f"{60 * r['candidates'] / r['candidates_s']:.1f} | {'yes' if r['log_equals_one_device'] else 'NO'} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps({"settings": settings.to_json(), "cores": os.cpu_count(),
                                                      "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
