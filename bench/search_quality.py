"""Evolutionary vs. random search on the default model at 70% Wanda, judged on held-out perplexity.

    python bench/search_quality.py [--generations 10 --population 12]

Both strategies get the same budget (generations x population candidates) and share one set of
caches. The best function of each is re-scored on the held-out evaluation split, which the search
never saw, next to uniform, OWL and the published DSA function on that same split. Run folders are
written under bench/results/ so the logs can be inspected.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data_config import DataConfig  # noqa: E402
from engine.errors import WorkbenchError  # noqa: E402
from engine.loading import load_model  # noqa: E402
from engine.search import events as ev  # noqa: E402
from engine.search.control import Control  # noqa: E402
from engine.search.evaluator import SessionEvaluator  # noqa: E402
from engine.search.search import Search, SearchSettings  # noqa: E402
from engine.search.store import RunStore  # noqa: E402
from engine.session import Session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--population", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = DataConfig()
    session = Session(load_model(None), data)
    evaluator = SessionEvaluator(session, args.sparsity, "wanda", "ppl")
    t0 = time.perf_counter()
    evaluator.prepare(lambda *a: None)
    print(f"model {session.loaded.label} on {session.loaded.device}; calibration {data.calib_tokens}, fitness "
          f"{data.fitness_tokens}, held-out {data.eval_tokens} tokens; caches built in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    bests = {}
    for strategy in ("evolution", "random"):
        settings = SearchSettings(sparsity=args.sparsity, strategy=strategy, population=args.population,
                                  generations=args.generations, seed=args.seed, data=data)
        run = RESULTS / f"search-{strategy}"
        shutil.rmtree(run, ignore_errors=True)
        store = RunStore(run)
        curve = []

        def on_event(event, curve=curve):
            if isinstance(event, ev.GenerationDone):
                curve.append(event.best)
                print(f"  {strategy} generation {event.generation}: best {event.best}, median {event.median}, "
                      f"{event.rejected} rejected", flush=True)

        t0 = time.perf_counter()
        finished = Search(settings, store, evaluator, on_event=on_event).run(Control())
        best = finished.best
        print(f"{strategy}: {args.generations * args.population} candidates in {time.perf_counter() - t0:.0f} s; "
              f"best fitness {best.fitness:.3f}: {best.text}", flush=True)
        bests[strategy] = best.text

    print("\nheld-out perplexity (evaluation split, never seen by the search):")
    rows = [("uniform", "uniform"), ("OWL", "owl"), ("published DSA", "dsa"),
            ("evolution best", bests["evolution"]), ("random best", bests["random"])]
    for label, method in rows:
        try:
            print(f"| {label} | {session.score(method, args.sparsity, 'wanda')[1]:.2f} | {method} |", flush=True)
        except WorkbenchError as exc:
            print(f"| {label} | rejected | {exc} |", flush=True)


if __name__ == "__main__":
    main()
