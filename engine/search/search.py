"""The searches over allocations, on the shared checkpointed loop (engine.search.core):

- evolution: DSA allocation functions, a population, tournaments, mutation and crossover, (mu + lambda)
  survival; the first population holds the seeds, the palette functions nearest the simple allocations
  (engine.allocation.distill) and random functions;
- random: the baseline, fresh random functions every generation (the first as evolution's), the same
  selection;
- evopress: sparsity profiles (EvoPress), one value per block, per attention and MLP group, or per linear
  (`granularity`): one parent (first the best of the simple allocations:
  uniform, OWL, AlphaPruning, DLP, and ATP, protect-first and protect-ends at every value of their grids),
  `population` offspring by level switches that keep the mean at the target, the best of parent and
  offspring is the next parent;
- hybrid: evolution for the first half of the generations, then the profile search from the best
  function's allocation, per `granularity` or finer where the function needs it (a `| groups` function gives
  a block's attention and MLP their own ratios: refined per block, it would lose them).

Every generation may go through selection stages (`stages`, multi-fidelity): all candidates are scored on
the first few fitness tokens, the best go on to more tokens, and only the full fitness split ranks
candidates between generations. A candidate whose block ratios (rounded to RATIO_DECIMALS) equal those
of one scored before at the same stage is not scored again: it is logged with that candidate's fitness
and index (`duplicate_of`).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

from engine.allocation import AllocationFunction
from engine.allocation.mapping import check_target
from engine.allocation.profiles import TUNED, parse_block_form
from engine.allocation.units import UNITS_PER_BLOCK, granularity_of
from engine.choices import (DEFAULT_FITNESS, DEFAULT_GENERATIONS, DEFAULT_GRANULARITY, DEFAULT_LEVEL_STEP,
                            DEFAULT_METRIC, DEFAULT_POPULATION, DEFAULT_SEARCH_STAGES, DEFAULT_STRATEGY, FITNESS,
                            GRANULARITIES, STRATEGIES)
from engine.corpus import mixed_sources
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.metrics import check_metric
from engine.search import events as ev
from engine.search.core import CheckpointedSearch, Outcome
from engine.search.genome import crossover, mutate, random_function
from engine.search.levels import START_BASELINES, mutate_profile, start_methods
from engine.search.store import RunStore
from engine.zeroshot import parse_tasks

TOURNAMENT = 3
CROSSOVER_P = 0.5
MAX_TRIES = 50
RATIO_DECIMALS = 3  # candidates whose block ratios agree to this many decimals are one candidate


@dataclass(frozen=True)
class SelectionStage:
    """Every candidate reaching the stage is scored on the first `tokens` fitness tokens; the best `keep` go on."""

    tokens: int
    keep: int

    def __str__(self) -> str:
        return f"{self.tokens}:{self.keep}"


def parse_search_stages(text: str) -> tuple[SelectionStage, ...]:
    """'512:8,1024:4': per stage, FITNESS_TOKENS:KEEP. Every candidate of a generation is scored on the first
    stage's tokens, the best KEEP go on; those left after the last stage are scored on the whole fitness split.
    '': every candidate on the whole split."""
    try:
        stages = tuple(SelectionStage(*(int(x) for x in part.split(":"))) for part in text.split(",") if part.strip())
    except (TypeError, ValueError):
        raise WorkbenchError(f"bad --stages {text!r}: expected FITNESS_TOKENS:KEEP, comma-separated, "
                             "e.g. 512:8,1024:4") from None
    if any(st.tokens < 1 or st.keep < 1 for st in stages):
        raise WorkbenchError(f"bad --stages {text!r}: tokens and KEEP must be positive")
    if any(b.tokens <= a.tokens or b.keep >= a.keep for a, b in zip(stages, stages[1:])):
        raise WorkbenchError(f"bad --stages {text!r}: tokens must grow and KEEP shrink from stage to stage")
    return stages


def auto_stages(data: DataConfig, population: int) -> tuple[SelectionStage, ...]:
    """The default selection: every candidate on a quarter of the fitness split (whole windows), the best
    third on all of it. Measured on the default model (bench/search_quality.py): the first 512 of 2,048
    fitness tokens rank candidates as well as all of them (Spearman 0.98 with held-out perplexity, both) at
    0.29x the time. None where the split has fewer than 4 windows or a generation fewer than 6 candidates."""
    windows = data.fitness_tokens // data.seqlen
    if windows < 4 or population < 6:
        return ()
    return (SelectionStage(windows // 4 * data.seqlen, population // 3),)


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
    stages: tuple[SelectionStage, ...] | str = DEFAULT_SEARCH_STAGES  # text ("auto", "512:8") parsed once
    level_step: float = DEFAULT_LEVEL_STEP  # evopress, hybrid: the grid of unit sparsities around each start
    granularity: str = DEFAULT_GRANULARITY  # evopress, hybrid: a profile's units (engine.allocation.units)
    model: str | None = None  # None: the default model
    data: DataConfig = field(default_factory=DataConfig)
    tasks: tuple[str, ...] | str = ()  # zero-shot tasks scored in final.json next to held-out perplexity (text:
    # parsed once, engine.zeroshot.parse_tasks)
    limit: int | None = None  # examples per zero-shot task (None: all)

    def __post_init__(self):
        check_target(self.sparsity)
        check_metric(self.metric)
        if self.fitness not in FITNESS:
            raise WorkbenchError(f"unknown fitness '{self.fitness}'; use one of {', '.join(FITNESS)}")
        if self.strategy not in STRATEGIES:
            raise WorkbenchError(f"unknown strategy '{self.strategy}'; use one of {', '.join(STRATEGIES)}")
        if self.population < 2 or self.generations < 1:
            raise WorkbenchError("the search needs --population >= 2 and --generations >= 1")
        object.__setattr__(self, "seeds", tuple(dict.fromkeys(str(AllocationFunction.parse(s)) for s in self.seeds)))
        if self.limit is not None and self.limit < 1:
            raise WorkbenchError(f"the zero-shot limit must be at least 1 example (got {self.limit})")
        if isinstance(self.tasks, str):
            object.__setattr__(self, "tasks", parse_tasks(self.tasks))
        stages = self.stages
        if isinstance(stages, str):
            stages = auto_stages(self.data, self.population) if stages == "auto" else parse_search_stages(stages)
        stages = tuple(st if isinstance(st, SelectionStage) else SelectionStage(*st) for st in stages)
        object.__setattr__(self, "stages", stages)
        if stages and (stages[-1].tokens >= self.data.fitness_tokens or stages[0].keep >= self.population):
            raise WorkbenchError(f"--stages {self.stages_text}: every stage needs fewer tokens than the fitness split "
                                 f"({self.data.fitness_tokens}) and keeps fewer than the {self.population} "
                                 "candidates of a generation")
        if self.granularity not in GRANULARITIES:
            raise WorkbenchError(f"unknown granularity '{self.granularity}'; use one of {', '.join(GRANULARITIES)}")
        if not 0 < self.level_step <= 0.1:
            raise WorkbenchError(f"--level-step must lie in (0, 0.1] (got {self.level_step})")

    @property
    def stage_tokens(self) -> tuple[int | None, ...]:
        """Fitness tokens per stage; None (the whole fitness split) for the last."""
        return tuple(st.tokens for st in self.stages) + (None,)

    def budget(self, blocks: int) -> int:
        """Candidates the search evaluates on a model of `blocks` blocks (at most: duplicates and rejections
        end stages early)."""
        per_generation = self.population + sum(self.stage_keep)
        if self.strategy == "evopress":  # the first generation: the start profiles
            starts = len(start_methods(self.sparsity, blocks))
            return starts + sum(self.stage_keep) + (self.generations - 1) * per_generation
        return self.generations * per_generation

    @property
    def hybrid_switch(self) -> int:
        """The hybrid strategy's first generation of profiles: half the generations are of functions."""
        return (self.generations + 1) // 2

    @property
    def stage_keep(self) -> tuple[int, ...]:
        return tuple(st.keep for st in self.stages)

    @property
    def stages_are_auto(self) -> bool:
        """The stages are the automatic ones for this population and fitness split (`--stages auto`)."""
        return bool(self.stages) and self.stages == auto_stages(self.data, self.population)

    @property
    def stages_text(self) -> str:
        """The stages as --stages takes them ('' for none)."""
        return ",".join(map(str, self.stages))

    def to_json(self) -> dict:
        return {**asdict(self), "stages": self.stages_text}

    @classmethod
    def from_json(cls, data: dict) -> SearchSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["data"] = DataConfig(**values.get("data", {}))
        values["seeds"] = tuple(values.get("seeds", ()))
        values["tasks"] = tuple(values.get("tasks", ()))
        values.setdefault("stages", "")  # a run from before stages had none
        return cls(**values)


class Search(CheckpointedSearch):
    """A search over allocations (see the module docstring); the evaluator scores `workers` candidates at
    once and gives block ratios without scoring (`ratios`), for the duplicate check."""

    def __init__(self, settings: SearchSettings, store: RunStore, evaluator, *,
                 held_out: Callable[[list[str], Callable], dict] | None = None,
                 on_event: Callable[[object], None] = print):
        super().__init__(store, settings.to_json(), on_event)
        self.settings = settings
        self.evaluator = evaluator
        self.workers = evaluator.workers
        self.held_out = held_out
        self.final_stage = len(settings.stage_keep)

    def resumed(self, state: dict) -> None:
        """A checkpoint from before stages and the duplicate check: the same search, continued."""
        if "stage" not in state:
            scored = [c for c in state.pop("this_generation", []) if c["fitness"] is not None]
            state.update(stage=0, by_ratios={}, rejected=0, stage_results=scored)

    # -- scoring ------------------------------------------------------------------------------------
    def evaluate(self, state, texts, check):
        """Score `texts` at the current stage; a candidate with the block ratios of one scored before at
        this stage (or earlier in `texts`) takes that one's fitness."""
        stage, first = state["stage"], state["evaluated"]
        outcomes: dict[int, Outcome] = {}
        fresh, first_at, same_as = [], {}, {}  # same_as: position in texts -> its first occurrence's
        for i, ratios in enumerate(self.evaluator.ratios(texts)):
            if isinstance(ratios, str):  # invalid: rejected without a forward
                outcomes[i] = Outcome(None, (), 0.0, ratios)
                continue
            key = ratio_key(stage, ratios)
            if key in state["by_ratios"]:
                index, fitness = state["by_ratios"][key]
                outcomes[i] = Outcome(fitness, tuple(ratios), 0.0, duplicate_of=index)
            elif key in first_at:
                same_as[i] = first_at[key]
            else:
                first_at[key] = i
                fresh.append(i)
        for i, outcome in zip(fresh, self.evaluator.evaluate([texts[i] for i in fresh], check, stage)):
            outcomes[i] = outcome
        for i, j in same_as.items():
            earlier = outcomes[j]
            outcomes[i] = (Outcome(earlier.fitness, earlier.ratios, 0.0, duplicate_of=first + j) if earlier.fitness
                           is not None else earlier)
        return [outcomes[i] for i in range(len(texts))]

    def candidate(self, state, index, text, outcome):
        return ev.Candidate(index, state["generation"], text, outcome.fitness, outcome.ratios, outcome.seconds,
                            outcome.reason, stage=state["stage"], duplicate_of=outcome.duplicate_of)

    def record(self, state, cand) -> bool:
        if not cand.scored:
            state["rejected"] += 1
            return False
        if cand.duplicate_of is None:
            state["by_ratios"][ratio_key(cand.stage, cand.ratios)] = [cand.index, cand.fitness]
            state["stage_results"].append(asdict(cand))
        if cand.stage == self.final_stage and (state["best"] is None or cand.fitness < state["best"]["fitness"]):
            state["best"] = asdict(cand)
            return True
        return False

    # -- stages and generations -------------------------------------------------------------------
    def advance(self, state: dict) -> None:
        """A stage ended: its best go on to the next stage, or the generation ends."""
        ranked = sorted(state["stage_results"], key=lambda c: (c["fitness"], c["text"]))
        if state["stage"] < self.final_stage and ranked:
            keep = self.settings.stage_keep[state["stage"]]
            self.on_event(ev.StageDone(state["generation"], state["stage"], len(ranked), min(keep, len(ranked)), 0,
                                       self.settings.stage_tokens[state["stage"]], ranked[0]["fitness"]))
            self._enter_stage(state, [c["text"] for c in ranked[:keep]], state["stage"] + 1)
            return
        self._end_generation(state, ranked)

    def _enter_stage(self, state: dict, texts: list[str], stage: int) -> None:
        """Queue `texts` at the first stage from `stage` on that keeps fewer of them than there are."""
        keep = self.settings.stage_keep
        while stage < self.final_stage and len(texts) <= keep[stage]:
            stage += 1
        state.update(queue=texts, stage=stage, stage_results=[])

    def _end_generation(self, state: dict, scored: list[dict]) -> None:
        fits = [c["fitness"] for c in scored]
        self.on_event(ev.GenerationDone(state["generation"], min(fits) if fits else None,
                                        statistics.median(fits) if fits else None, len(scored),
                                        state["rejected"]))
        pool = {c["text"]: c for c in state["population"]}
        pool.update({c["text"]: c for c in scored})
        size = 1 if self.profiles(state["generation"]) else self.settings.population
        state["population"] = sorted(pool.values(), key=lambda c: (c["fitness"], c["text"]))[:size]
        state["generation"] += 1
        if state["generation"] >= self.settings.generations:
            state.update(done=True, queue=[], stage_results=[])
            return
        if self.settings.strategy == "hybrid" and state["generation"] == self.settings.hybrid_switch:
            best = state["population"][0]  # the parent of the profile phase: the best function's allocation
            profile = self.evaluator.profiles([best["text"]], self.settings.granularity)[0]  # (finer if need be)
            state["population"] = [{**best, "text": profile}]
            blocks = len(self.evaluator.unit_params("block"))
            units = granularity_of(len(parse_block_form(profile)[1]), blocks)
            state["weights"] = self.evaluator.unit_params(units)
        rng = restore_rng(state["rng"])
        self._start_generation(state, self._offspring(state, rng))
        state["rng"] = rng_state(rng)

    def _start_generation(self, state: dict, texts: list[str]) -> None:
        state["rejected"] = 0
        self._enter_stage(state, texts, 0)

    def final_result(self, state: dict, check) -> dict:
        """The best re-scored on the held-out split next to uniform, OWL, protect-first and the published
        one-knob rules ATP and DLP (the simple baselines a search must beat), and on the settings' zero-shot
        tasks."""
        best = state["best"]
        d = self.settings.data
        final = {"best": best, "held_out_perplexity": {}, "corpora": {"corpus": d.corpus, "eval_corpus": d.eval_corpus}}
        if self.held_out is not None:
            methods = ([best["text"]] if best else []) + ["uniform", "owl", "atp", "dlp", "first"]
            final["held_out_perplexity"] = self.held_out(methods, check)
            held = final["held_out_perplexity"].get(best["text"]) if best else None
            if held is not None and self.settings.fitness == "ppl":  # how far the fitness figure was from held-out
                final["fitness_to_held_out"] = held / best["fitness"]
            other = second_corpus(d.corpus)
            try:
                final["second_corpus"] = {"corpus": other, "held_out_perplexity": self.held_out(methods, check, other)}
            except WorkbenchError as exc:  # its package is not installed: said, the rest stands
                final["second_corpus"] = {"corpus": other, "error": str(exc)}
            if self.settings.tasks:
                final["zero_shot"] = self.evaluator.zero_shot(methods, self.settings.tasks, self.settings.limit,
                                                              check)
        return final

    # -- populations ------------------------------------------------------------------------
    def initial_state(self) -> dict:
        rng = random.Random(self.settings.seed)
        state = {"generation": 0, "population": [], "best": None, "by_ratios": {}, "evaluated": 0, "logged": 0,
                 "done": False}
        if self.settings.strategy == "evopress":
            weights = self.evaluator.unit_params(self.settings.granularity)
            blocks = len(weights) // UNITS_PER_BLOCK[self.settings.granularity]
            starts = self.evaluator.profiles(start_methods(self.settings.sparsity, blocks), self.settings.granularity)
            queue = list(dict.fromkeys(p for p in starts if p))  # those that cannot allocate left out
            state.update(weights=weights, seen=sorted(queue))
        else:  # the seeds, the functions nearest the simple allocations, then random functions
            queue = list(dict.fromkeys(self.settings.seeds))
            room = max(0, self.settings.population - len(queue))  # the first simple allocations that fit
            starts = self.evaluator.distilled([*START_BASELINES, *TUNED][:room])
            queue += [f for f in dict.fromkeys(starts) if f not in queue][:room]
            seen = set(queue)
            while len(queue) < self.settings.population:
                queue.append(self._fresh(rng, seen, lambda: random_function(rng)))
            state["seen"] = sorted(seen)
        self._start_generation(state, queue)
        state["rng"] = rng_state(rng)
        return state

    def profiles(self, generation: int) -> bool:
        """Whether `generation` is one of profiles (evopress, and hybrid from its switch on)."""
        return self.settings.strategy == "evopress" or (self.settings.strategy == "hybrid"
                                                         and generation >= self.settings.hybrid_switch)

    def _offspring(self, state: dict, rng: random.Random) -> list[str]:
        seen = set(state["seen"])
        if self.profiles(state["generation"]):
            parent = state["population"][0]["text"] if state["population"] else state["seen"][0]
            make = lambda: mutate_profile(parent, state["weights"], self.settings.level_step, rng)  # noqa: E731
            queue = []
            for _ in range(self.settings.population):
                for _attempt in range(MAX_TRIES):
                    text = make()
                    if text not in seen:
                        seen.add(text)
                        queue.append(text)
                        break
        else:
            queue = self._next_functions(state, rng, seen)
        state["seen"] = sorted(seen)
        return queue

    def _next_functions(self, state: dict, rng: random.Random, seen: set[str]) -> list[str]:
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

        return [self._fresh(rng, seen, child) for _ in range(self.settings.population)]

    @staticmethod
    def _fresh(rng: random.Random, seen: set[str], make: Callable[[], AllocationFunction]) -> str:
        """A function not evaluated before (canonical text), falling back to random ones."""
        for attempt in range(MAX_TRIES * 2):
            text = str(make() if attempt < MAX_TRIES else random_function(rng))
            if text not in seen:
                seen.add(text)
                return text
        raise WorkbenchError("the search space is exhausted: no new function found")


def second_corpus(corpus: str | None) -> str:
    """The corpus of another domain every final best is also scored on: Wikipedia, or the speeches where the
    search's own corpus has Wikipedia in it."""
    return "sotu" if "wikipedia" in mixed_sources(corpus) else "wikipedia"


def ratio_key(stage: int, ratios) -> str:
    """The duplicate check's key: the stage and the block ratios rounded to RATIO_DECIMALS."""
    return f"{stage}|" + ",".join(f"{r:.{RATIO_DECIMALS}f}" for r in ratios)


def restore_rng(state: list) -> random.Random:
    """A Random in the state `rng_state` saved (JSON-friendly lists)."""
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]
