"""DarwinLM-style search over per-block levels with training-aware multistep selection.

Each generation: the parent plus `offspring` mutants (budget-conserving level switches, never a
structure seen before) go through the selection stages. A stage scores every candidate still in
the race, then keeps its best `survivors`. A stage fine-tunes a fresh copy of each candidate on its
number of training tokens before measuring KL(dense || pruned) on its number of fitness tokens;
later stages use more of both, so what survives is what recovers well under training. The last
stage keeps one: the next parent. One-shot mode skips the fine-tunes (the ablation).

Every candidate evaluation starts from the database weights, so it is a pure function of
(structure, stage): results are cached in the state, so the parent, met again in the next
generation, is not scored twice. The loop, the log and the checkpoints are engine.search.core's.
A rejected candidate (a diverging fine-tune, say) leaves the race; a stage where all are rejected
ends the generation with the parent unchanged.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from engine.choices import (DEFAULT_LR, DEFAULT_OFFSPRING, DEFAULT_STAGES, DEFAULT_STRUCTURED_GENERATIONS,
                            DEFAULT_TARGET_PARAMS)
from engine.errors import WorkbenchError
from engine.search import events as ev
from engine.search.core import CheckpointedSearch
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
    target: float = DEFAULT_TARGET_PARAMS  # fraction of decoder linear parameters kept
    generations: int = DEFAULT_STRUCTURED_GENERATIONS
    offspring: int = DEFAULT_OFFSPRING
    stages: tuple[Stage, ...] | str = DEFAULT_STAGES  # text (see parse_stages) parsed once
    one_shot: bool = False  # no fine-tune before scoring
    lr: float = DEFAULT_LR
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.target < 1:
            raise WorkbenchError(f"--target-params must lie in (0, 1) (got {self.target})")
        if self.generations < 1 or self.offspring < 1:
            raise WorkbenchError("the search needs --generations >= 1 and --offspring >= 1")
        stages = parse_stages(self.stages) if isinstance(self.stages, str) else self.stages
        stages = tuple(s if isinstance(s, Stage) else Stage(*s) for s in stages)
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
        return cls(**{**data, "stages": ",".join(data["stages"])})


class StructuredSearch(CheckpointedSearch):
    """`evaluator.evaluate(texts, check, stage)` scores candidates (one model here, or a cluster's workers:
    `evaluator.workers` at a time); `evaluator.held_out(structures, check)` -> perplexity per text after the
    search; `fractions(structure)` -> per block, the fraction of its linear parameters kept."""

    def __init__(self, settings: StructuredSettings, shapes: Shapes, store: RunStore, evaluator, *,
                 fractions=lambda s: (), on_event=lambda e: None):
        super().__init__(store, settings.to_json(), on_event)
        self.settings = settings
        self.shapes = shapes
        self.evaluator = evaluator
        self.workers = evaluator.workers
        self.fractions = fractions

    def cached(self, state, text) -> bool:
        return f"{state['stage']}|{text}" in state["scores"]

    def evaluate(self, state, texts, check):
        return self.evaluator.evaluate(texts, check, state["stage"])

    def candidate(self, state, index, text, outcome):
        ratios = outcome.ratios or tuple(self.fractions(Structure.parse(text, self.shapes)))
        return ev.Candidate(index, state["generation"], text, outcome.fitness, ratios, outcome.seconds,
                            outcome.reason, stage=state["stage"])

    def record(self, state, cand) -> bool:
        state["scores"][f"{cand.stage}|{cand.text}"] = cand.fitness  # None: rejected, out of the race
        if cand.stage == len(self.settings.stages) - 1:
            state.setdefault("final_rows", {})[cand.text] = cand.index  # the log row a winner's record names
        return False  # the best is the winner of a whole generation (see _end_generation)

    def advance(self, state: dict) -> None:
        """End a selection stage: its best survive into the next stage, or the generation ends."""
        stage = state["stage"]
        spec = self.settings.stages[stage]
        score = lambda t: state["scores"][f"{stage}|{t}"]  # noqa: E731
        ranked = sorted((t for t in state["pool"] if score(t) is not None), key=lambda t: (score(t), t))
        if stage == 0:  # what the generation's GenerationDone counts (the parent among them, scored before)
            state["first_stage"] = [len(ranked), len(state["pool"]) - len(ranked)]
        state["pool"] = ranked[: spec.survivors]
        if not ranked:  # every candidate of the stage was rejected: the parent stays
            self._end_generation(state, None, None)
            return
        self.on_event(ev.StageDone(state["generation"], stage, len(ranked), len(state["pool"]),
                                   self.settings.finetune_tokens(stage), spec.fitness_tokens, score(ranked[0])))
        if stage + 1 < len(self.settings.stages):
            state["stage"] = stage + 1
            state["queue"] = list(state["pool"])
        else:
            self._end_generation(state, ranked[0], score(ranked[0]))

    def _end_generation(self, state: dict, winner: str | None, fitness: float | None) -> None:
        if winner is not None:
            structure = Structure.parse(winner, self.shapes)
            row = state.get("final_rows", {}).get(winner, state["evaluated"])  # (checkpoints of older versions)
            record = asdict(ev.Candidate(row, state["generation"], winner, fitness,
                                         tuple(self.fractions(structure)), stage=len(self.settings.stages) - 1))
            state["parent"] = winner
            if state["best"] is None or fitness < state["best"]["fitness"]:
                state["best"] = record
                self.on_event(ev.NewBest(ev.Candidate.from_json(record)))
        scored, rejected = state.pop("first_stage", (state["candidates"], 0))
        self.on_event(ev.GenerationDone(state["generation"], fitness, None, scored, rejected))
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

    def initial_state(self) -> dict:
        start = str(uniform(self.shapes, self.settings.target))
        state = {"generation": 0, "parent": start, "best": None, "evaluated": 0, "logged": 0, "done": False,
                 "seen": [start], "uniform": start, "scores": {}}
        rng = random.Random(self.settings.seed)
        self._start_generation(state, rng)
        state["rng"] = rng_state(rng)
        return state

    def final_result(self, state: dict, check) -> dict:
        """Held-out perplexity (no fine-tune) of the uniform start and of the best structure."""
        best = state["best"]
        texts = {"uniform": state["uniform"]} | ({"searched": best["text"]} if best else {})
        held = self.evaluator.held_out(texts, check)
        return {"best": best, "uniform": state["uniform"], "held_out_perplexity": held}
