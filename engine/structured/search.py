"""DarwinLM-style search over per-block levels with training-aware multistep selection.

Each generation: the parent plus `offspring` mutants (budget-conserving level switches, never a
structure seen before) go through the selection stages. A stage scores every candidate still in
the race, then keeps its best `survivors`. A stage fine-tunes a fresh copy of each candidate on its
number of training tokens before measuring KL(dense || pruned) on its number of fitness tokens;
later stages use more of both, so what survives is what recovers well under training. The last
stage keeps one: the next parent. One-shot mode skips the fine-tunes (the ablation).

Every candidate evaluation starts from the database weights, so it is a pure function of
(structure, stage): results are cached in the state, the log gets one line per evaluation, and the
checkpoint is replaced after each, so a killed search resumes where it was; the parent, met
again in the next generation, is not scored twice.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from engine.errors import WorkbenchError
from engine.search import events as ev
from engine.search.control import Control, SearchStopped
from engine.search.search import restore_rng, rng_state
from engine.search.store import RunStore
from engine.structured.structure import Shapes, Structure, mutate, uniform

MAX_TRIES = 200


@dataclass(frozen=True)
class Stage:
    survivors: int
    finetune_tokens: int
    fitness_tokens: int

    def __str__(self) -> str:
        return f"{self.survivors}:{self.finetune_tokens}:{self.fitness_tokens}"


DEFAULT_STAGES = "8:2048:1024,4:4096:2048,2:8192:4096,1:16384:8192"


def parse_stages(text: str) -> tuple[Stage, ...]:
    """'8:2048:1024,4:4096:2048,...': per stage, SURVIVORS:FINETUNE_TOKENS:FITNESS_TOKENS."""
    try:
        stages = tuple(Stage(*(int(x) for x in part.split(":"))) for part in text.split(",") if part.strip())
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"bad --stages {text!r}: expected SURVIVORS:FINETUNE_TOKENS:FITNESS_TOKENS, "
                             "comma-separated, e.g. 8:2048:1024,4:4096:2048,1:8192:4096") from exc
    if not stages:
        raise WorkbenchError("--stages needs at least one stage")
    return stages


@dataclass(frozen=True)
class StructuredSettings:
    target: float = 0.5  # fraction of decoder linear parameters kept
    generations: int = 50
    offspring: int = 16
    stages: tuple[Stage, ...] = field(default_factory=lambda: parse_stages(DEFAULT_STAGES))
    one_shot: bool = False  # no fine-tune before scoring
    lr: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.target < 1:
            raise WorkbenchError(f"--target-params must lie in (0, 1) (got {self.target})")
        if self.generations < 1 or self.offspring < 1:
            raise WorkbenchError("the search needs --generations >= 1 and --offspring >= 1")
        stages = tuple(s if isinstance(s, Stage) else Stage(*s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        survivors = [s.survivors for s in stages]
        if survivors[-1] != 1 or any(b >= a for a, b in zip(survivors, survivors[1:])) or survivors[0] < 1:
            raise WorkbenchError(f"stage survivors must decrease to 1 (got {' -> '.join(map(str, survivors))})")
        if survivors[0] > self.offspring + 1:
            raise WorkbenchError(f"the first stage keeps {survivors[0]} of only {self.offspring + 1} candidates")
        if any(s.fitness_tokens < 1 or s.finetune_tokens < 0 for s in stages):
            raise WorkbenchError("every stage needs fitness tokens > 0 and fine-tune tokens >= 0")
        if not self.lr > 0:
            raise WorkbenchError(f"the learning rate must be positive (got {self.lr})")

    def finetune_tokens(self, stage: int) -> int:
        return 0 if self.one_shot else self.stages[stage].finetune_tokens

    def to_json(self) -> dict:
        return {**asdict(self), "stages": [str(s) for s in self.stages]}

    @classmethod
    def from_json(cls, data: dict) -> StructuredSettings:
        return cls(**{**data, "stages": parse_stages(",".join(data["stages"]))})


class StructuredSearch:
    """`evaluate(structure, finetune_tokens, fitness_tokens, check)` -> (KL, seconds) scores one
    candidate; `held_out(structures)` -> perplexity per text after the search."""

    def __init__(self, settings: StructuredSettings, shapes: Shapes, store: RunStore, evaluate, *,
                 fractions=lambda s: (), held_out=None, on_event=lambda e: None):
        self.settings = settings
        self.shapes = shapes
        self.store = store
        self.evaluate = evaluate
        self.fractions = fractions
        self.held_out = held_out
        self.on_event = on_event
        self.state: dict | None = None

    def run(self, control: Control) -> ev.SearchFinished | None:
        state = self.store.load_state() or self._initial_state()
        self.state = state
        try:
            while not state["done"]:
                if state["queue"]:
                    self._evaluate_next(state, control)
                else:
                    self._end_stage(state)
        except SearchStopped:
            self.on_event(ev.SearchStoppedEvent(state["evaluated"]))
            return None
        return self._finish()

    def _evaluate_next(self, state: dict, control: Control) -> None:
        control.checkpoint()
        text, stage = state["queue"][0], state["stage"]
        key = f"{stage}|{text}"
        if key not in state["scores"]:
            self.on_event(ev.CandidateStarted(state["evaluated"], state["generation"], text))
            structure = Structure.parse(text, self.shapes)
            fitness, seconds = self.evaluate(structure, self.settings.finetune_tokens(stage),
                                             self.settings.stages[stage].fitness_tokens, control.checkpoint)
            cand = ev.Candidate(state["evaluated"], state["generation"], text, fitness,
                                tuple(self.fractions(structure)), seconds, stage=stage)
            self.store.append(cand)
            state["evaluated"] += 1
            state["logged"] += 1
            state["scores"][key] = fitness
            self.on_event(ev.CandidateScored(cand))
        state["queue"] = state["queue"][1:]
        self._checkpoint(state)
        control.candidate_done()

    def _end_stage(self, state: dict) -> None:
        stage = state["stage"]
        spec = self.settings.stages[stage]
        ranked = sorted(state["pool"], key=lambda t: (state["scores"][f"{stage}|{t}"], t))
        state["pool"] = ranked[: spec.survivors]
        best_fitness = state["scores"][f"{stage}|{ranked[0]}"]
        self.on_event(ev.StageDone(state["generation"], stage, len(ranked), len(state["pool"]),
                                   self.settings.finetune_tokens(stage), spec.fitness_tokens, best_fitness))
        if stage + 1 < len(self.settings.stages):
            state["stage"] = stage + 1
            state["queue"] = list(state["pool"])
        else:
            self._end_generation(state, ranked[0], best_fitness)
        self._checkpoint(state)

    def _end_generation(self, state: dict, winner: str, fitness: float) -> None:
        structure = Structure.parse(winner, self.shapes)
        record = asdict(ev.Candidate(state["evaluated"], state["generation"], winner, fitness,
                                     tuple(self.fractions(structure)), stage=len(self.settings.stages) - 1))
        state["parent"] = winner
        if state["best"] is None or fitness < state["best"]["fitness"]:
            state["best"] = record
            self.on_event(ev.NewBest(ev.Candidate.from_json(record)))
        self.on_event(ev.GenerationDone(state["generation"], fitness, None, state["candidates"], 0))
        state["generation"] += 1
        if state["generation"] >= self.settings.generations:
            state["done"] = True
            return
        rng = restore_rng(state["rng"])
        self._start_generation(state, rng)
        state["rng"] = rng_state(rng)

    def _start_generation(self, state: dict, rng: random.Random) -> None:
        seen = set(state["seen"])
        parent = Structure.parse(state["parent"], self.shapes)
        pool = [state["parent"]]
        for _ in range(self.settings.offspring):
            for _attempt in range(MAX_TRIES):
                text = str(mutate(parent, self.shapes, rng))
                if text not in seen:
                    break
            else:
                break  # the neighbourhood is exhausted: a smaller generation
            seen.add(text)
            pool.append(text)
        state.update(pool=pool, queue=list(pool), stage=0, candidates=len(pool), seen=sorted(seen))

    def _initial_state(self) -> dict:
        start = str(uniform(self.shapes, self.settings.target))
        state = {"generation": 0, "parent": start, "best": None, "evaluated": 0, "logged": 0, "done": False,
                 "seen": [start], "uniform": start, "scores": {}}
        rng = random.Random(self.settings.seed)
        self._start_generation(state, rng)
        state["rng"] = rng_state(rng)
        return state

    def _checkpoint(self, state: dict) -> None:
        best = ev.Candidate.from_json(state["best"]) if state["best"] else None
        self.store.save_state(state, best)
        self.on_event(ev.CheckpointWritten(str(self.store.folder), state["evaluated"]))

    def _finish(self) -> ev.SearchFinished:
        best = self.state["best"]
        final = self.store.final()
        if final is None:
            texts = {"uniform": self.state["uniform"], "searched": best["text"]}
            held = self.held_out(texts) if self.held_out is not None else {}
            final = {"best": best, "uniform": self.state["uniform"], "held_out_perplexity": held}
            self.store.write_final(final)
        finished = ev.SearchFinished(ev.Candidate.from_json(best),
                                     final["held_out_perplexity"])
        self.on_event(finished)
        return finished

