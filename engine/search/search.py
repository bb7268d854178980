"""DSA evolutionary search (and the random-search baseline) over allocation functions, on the shared
checkpointed loop (engine.search.core)."""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from engine.allocation import AllocationFunction
from engine.allocation.mapping import check_target
from engine.choices import (DEFAULT_FITNESS, DEFAULT_GENERATIONS, DEFAULT_METRIC, DEFAULT_POPULATION,
                            DEFAULT_STRATEGY, FITNESS, STRATEGIES)
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.metrics import check_metric
from engine.search import events as ev
from engine.search.core import CheckpointedSearch
from engine.search.genome import crossover, mutate, random_function
from engine.search.store import RunStore

TOURNAMENT = 3
CROSSOVER_P = 0.5
MAX_TRIES = 50


@dataclass(frozen=True)
class SearchSettings:
    sparsity: float
    metric: str = DEFAULT_METRIC
    fitness: str = DEFAULT_FITNESS
    strategy: str = DEFAULT_STRATEGY
    population: int = DEFAULT_POPULATION
    generations: int = DEFAULT_GENERATIONS
    seed: int = 0
    seeds: tuple[str, ...] = ()  # functions placed in the first population
    model: str | None = None  # None: the default model
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self):
        check_target(self.sparsity)
        check_metric(self.metric)
        if self.fitness not in FITNESS:
            raise WorkbenchError(f"unknown fitness '{self.fitness}'; use one of {', '.join(FITNESS)}")
        if self.strategy not in STRATEGIES:
            raise WorkbenchError(f"unknown strategy '{self.strategy}'; use one of {', '.join(STRATEGIES)}")
        if self.population < 2 or self.generations < 1:
            raise WorkbenchError("the search needs --population >= 2 and --generations >= 1")
        object.__setattr__(self, "seeds", tuple(str(AllocationFunction.parse(s)) for s in self.seeds))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SearchSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["data"] = DataConfig(**values.get("data", {}))
        values["seeds"] = tuple(values.get("seeds", ()))
        return cls(**values)


class Search(CheckpointedSearch):
    """Evolution (or random search) over allocation functions: a population, tournaments, mutation and
    crossover; the evaluator scores `workers` candidates at once."""

    def __init__(self, settings: SearchSettings, store: RunStore, evaluator, *,
                 held_out: Callable[[list[str], Callable], dict] | None = None,
                 on_event: Callable[[object], None] = print):
        super().__init__(store, settings.to_json(), on_event)
        self.settings = settings
        self.evaluator = evaluator
        self.workers = evaluator.workers
        self.held_out = held_out

    def evaluate(self, state, texts, check):
        return self.evaluator.evaluate(texts, check)

    def candidate(self, state, index, text, outcome):
        return ev.Candidate(index, state["generation"], text, outcome.fitness, outcome.ratios, outcome.seconds,
                            outcome.reason)

    def record(self, state, cand) -> bool:
        state["this_generation"].append(asdict(cand))
        if cand.scored and (state["best"] is None or cand.fitness < state["best"]["fitness"]):
            state["best"] = asdict(cand)
            return True
        return False

    def advance(self, state: dict) -> None:
        """End a generation: the best of population and offspring survive; breed the next queue."""
        records = [ev.Candidate.from_json(c) for c in state["this_generation"]]
        scored = [c for c in records if c.scored]
        fits = [c.fitness for c in scored]
        self.on_event(ev.GenerationDone(state["generation"], min(fits) if fits else None,
                                        statistics.median(fits) if fits else None, len(scored),
                                        len(records) - len(scored)))
        pool = {c["text"]: c for c in state["population"]}
        pool.update({c.text: asdict(c) for c in scored})
        ranked = sorted(pool.values(), key=lambda c: (c["fitness"], c["text"]))
        state["population"] = ranked[: self.settings.population]
        state["this_generation"] = []
        state["generation"] += 1
        if state["generation"] >= self.settings.generations:
            state["done"] = True
        else:
            rng = restore_rng(state["rng"])
            state["queue"] = self._next_queue(state, rng)
            state["rng"] = rng_state(rng)

    def final_result(self, state: dict, check) -> dict:
        """The best function re-scored on the held-out split next to uniform and OWL."""
        best = state["best"]
        held = {}
        if self.held_out is not None:
            held = self.held_out(([best["text"]] if best else []) + ["uniform", "owl"], check)
        return {"best": best, "held_out_perplexity": held}

    # -- populations ------------------------------------------------------------------------
    def initial_state(self) -> dict:
        rng = random.Random(self.settings.seed)
        queue = list(dict.fromkeys(self.settings.seeds))
        seen = set(queue)
        while len(queue) < self.settings.population:
            queue.append(self._fresh(rng, seen, lambda: random_function(rng)))
        return {"generation": 0, "queue": queue, "population": [], "this_generation": [], "best": None,
                "rng": rng_state(rng), "seen": sorted(seen), "evaluated": 0, "logged": 0, "done": False}

    def _next_queue(self, state: dict, rng: random.Random) -> list[str]:
        seen = set(state["seen"])
        parents = [AllocationFunction.parse(c["text"]) for c in state["population"]]
        fitness = {c["text"]: c["fitness"] for c in state["population"]}

        def tournament() -> AllocationFunction:
            group = rng.sample(parents, min(TOURNAMENT, len(parents)))
            return min(group, key=lambda f: (fitness[str(f)], str(f)))

        def child() -> AllocationFunction:
            if self.settings.strategy == "random" or not parents:
                return random_function(rng)
            if len(parents) >= 2 and rng.random() < CROSSOVER_P:
                f = crossover(tournament(), tournament(), rng)
                return mutate(f, rng) if rng.random() < 0.5 else f
            return mutate(tournament(), rng)

        queue = [self._fresh(rng, seen, child) for _ in range(self.settings.population)]
        state["seen"] = sorted(seen)
        return queue

    @staticmethod
    def _fresh(rng: random.Random, seen: set[str], make: Callable[[], AllocationFunction]) -> str:
        """A function not evaluated before (canonical text), falling back to random ones."""
        for attempt in range(MAX_TRIES * 2):
            text = str(make() if attempt < MAX_TRIES else random_function(rng))
            if text not in seen:
                seen.add(text)
                return text
        raise WorkbenchError("the search space is exhausted: no new function found")


def restore_rng(state: list) -> random.Random:
    """A Random in the state `rng_state` saved (JSON-friendly lists)."""
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]
