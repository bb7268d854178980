"""DSA evolutionary search (and the random-search baseline) over allocation functions.

The loop is a sequence of candidate evaluations; after each one the log gets a line and the
checkpoint is replaced atomically, so a killed run resumes losing at most the candidate in
flight, and (fitness being deterministic) ends with the same population as an uninterrupted run.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from engine.allocation import AllocationFunction
from engine.allocation.mapping import check_target
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.metrics import check_metric
from engine.search import events as ev
from engine.search.control import Control, SearchStopped
from engine.search.evaluator import FITNESS
from engine.search.genome import crossover, mutate, random_function
from engine.search.store import RunStore

STRATEGIES = ("evolution", "random")
TOURNAMENT = 3
CROSSOVER_P = 0.5
MAX_TRIES = 50


@dataclass(frozen=True)
class SearchSettings:
    sparsity: float
    metric: str = "wanda"
    fitness: str = "ppl"
    strategy: str = "evolution"
    population: int = 24
    generations: int = 30
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


class Search:
    def __init__(self, settings: SearchSettings, store: RunStore, evaluator, *,
                 held_out: Callable[[list[str]], dict] | None = None, on_event: Callable[[object], None] = print):
        self.settings = settings
        self.store = store
        self.evaluator = evaluator
        self.held_out = held_out
        self.on_event = on_event
        self.state: dict | None = None

    # -- the loop ---------------------------------------------------------------------------
    def run(self, control: Control) -> ev.SearchFinished | None:
        state = self.store.load_state() or self._initial_state()
        self.state = state
        try:
            while not state["done"]:
                if not state["queue"]:
                    self._end_generation(state)
                    continue
                self._evaluate_chunk(state, control)
        except SearchStopped:
            self.on_event(ev.SearchStoppedEvent(state["evaluated"]))
            return None
        return self._finish()

    def _evaluate_chunk(self, state: dict, control: Control) -> None:
        control.checkpoint()
        chunk = state["queue"][: self.evaluator.workers]
        for i, text in enumerate(chunk):
            self.on_event(ev.CandidateStarted(state["evaluated"] + i, state["generation"], text))
        outcomes = self.evaluator.evaluate(chunk, control.checkpoint)
        for text, (fitness, ratios, seconds, reason) in zip(chunk, outcomes):
            cand = ev.Candidate(state["evaluated"], state["generation"], text, fitness, tuple(ratios), seconds, reason)
            self.store.append(cand)
            state["evaluated"] += 1
            state["logged"] += 1
            state["this_generation"].append(asdict(cand))
            if cand.scored:
                best = state["best"]
                if best is None or cand.fitness < best["fitness"]:
                    state["best"] = asdict(cand)
                    self.on_event(ev.NewBest(cand))
                self.on_event(ev.CandidateScored(cand))
            else:
                self.on_event(ev.CandidateRejected(cand))
        state["queue"] = state["queue"][len(chunk):]
        self._checkpoint(state)
        control.candidate_done()

    def _end_generation(self, state: dict) -> None:
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
        self._checkpoint(state)

    def _checkpoint(self, state: dict) -> None:
        best = ev.Candidate.from_json(state["best"]) if state["best"] else None
        self.store.save_state(state, best)
        self.on_event(ev.CheckpointWritten(str(self.store.folder), state["evaluated"]))

    def _finish(self) -> ev.SearchFinished:
        best = ev.Candidate.from_json(self.state["best"]) if self.state["best"] else None
        final = self.store.final()
        if final is None:
            held = {}
            if self.held_out is not None:
                held = self.held_out(([best.text] if best else []) + ["uniform", "owl"])
            final = {"best": asdict(best) if best else None, "held_out_perplexity": held}
            self.store.write_final(final)
        finished = ev.SearchFinished(best, final["held_out_perplexity"])
        self.on_event(finished)
        return finished

    # -- populations ------------------------------------------------------------------------
    def _initial_state(self) -> dict:
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
