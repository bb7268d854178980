"""Events a search emits, as frozen records (the CLI prints them, the TUI posts them as messages).

No torch: the screens and the CLI read them too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.search.control import SearchState


@dataclass(frozen=True)
class Candidate:
    """One evaluated candidate, as logged in candidates.jsonl."""

    index: int
    generation: int
    text: str
    fitness: float | None  # None when rejected
    ratios: tuple[float, ...] = ()
    seconds: float = 0.0
    reason: str | None = None  # why it was rejected
    stage: int = 0  # selection stage (the last one ranks candidates between generations)
    duplicate_of: int | None = None  # the earlier candidate with the same block ratios, whose fitness this is

    @property
    def scored(self) -> bool:
        return self.fitness is not None

    @classmethod
    def from_json(cls, data: dict) -> Candidate:
        """From its JSON form (a log line, a checkpoint entry), where the ratios are a list."""
        return cls(**{**data, "ratios": tuple(data.get("ratios", ()))})


@dataclass(frozen=True)
class CandidateStarted:
    index: int
    generation: int
    text: str


@dataclass(frozen=True)
class CandidateScored:
    candidate: Candidate


@dataclass(frozen=True)
class CandidateRejected:
    candidate: Candidate


@dataclass(frozen=True)
class NewBest:
    candidate: Candidate


@dataclass(frozen=True)
class GenerationDone:
    generation: int
    best: float | None
    median: float | None
    scored: int
    rejected: int


@dataclass(frozen=True)
class StageDone:
    """A selection stage of a generation has scored its candidates (its best `survivors` go on)."""

    generation: int
    stage: int
    scored: int
    survivors: int
    finetune_tokens: int
    fitness_tokens: int
    best: float


@dataclass(frozen=True)
class WorkersChanged:
    """A cluster's workers: how many, how many scoring a candidate, how many died so far, and how many
    replacements are still loading the model."""

    total: int
    busy: int
    failed: int
    starting: int = 0


@dataclass(frozen=True)
class CheckpointWritten:
    path: str
    evaluated: int


@dataclass(frozen=True)
class StateChanged:
    """The search entered `state` (engine.search.control.SearchState). When it ended: `evaluated`
    candidates so far, `resumable` (a checkpoint exists, start continues it) and, for "failed", why."""

    state: SearchState
    evaluated: int = 0
    resumable: bool = False
    message: str = ""


@dataclass(frozen=True)
class SearchFinished:
    best: Candidate | None
    held_out: dict = field(default_factory=dict)  # method/text -> held-out perplexity
    zero_shot: dict = field(default_factory=dict)  # method/text -> task -> engine.zeroshot.TaskScore as JSON
    second_corpus: dict = field(default_factory=dict)  # corpus, and held_out_perplexity (or error) on it
