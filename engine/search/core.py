"""The checkpointed run loop both searches share (DSA functions, structured levels).

A search is a sequence of candidate evaluations over a queue; when the queue is empty the search
advances (a generation or a selection stage ends and fills it again). After every evaluation the
log gets one line per candidate and the checkpoint is replaced atomically, so a killed run resumes
losing at most the candidates in flight and, fitness being deterministic, ends as an uninterrupted
run would. The run folder appears only in `begin`, once the caller has loaded the model and built
its caches, with the initial state already checkpointed.

Every failure of one candidate, whatever it is (an invalid function, a LAPACK error, a diverging
fine-tune, a non-finite fitness), is logged as a rejection with its reason and the search goes on;
only MAX_ERRORS_IN_A_ROW unexpected errors in a row (the machine, not the candidate, is at fault:
out of memory, a lost device) end it as failed, checkpointed as it was before them, so that a resumed run
scores them again once the cause is fixed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from engine.errors import WorkbenchError
from engine.search import events as ev
from engine.search.control import Control, SearchStopped
from engine.search.store import RunStore

MAX_ERRORS_IN_A_ROW = 10


@dataclass(frozen=True)
class Outcome:
    """What scoring one candidate gave: a fitness, or why it was rejected."""

    fitness: float | None
    ratios: tuple[float, ...] = ()
    seconds: float = 0.0
    reason: str | None = None
    error: bool = False  # an unexpected exception, not a property of the candidate
    duplicate_of: int | None = None  # not scored: the same allocation as this earlier candidate


def attempt(score: Callable[[], tuple[float, Sequence[float]]]) -> Outcome:
    """Run `score()` -> (fitness, ratios) for one candidate; turn every failure into a rejection."""
    start = time.perf_counter()
    try:
        fitness, ratios = score()
    except SearchStopped:
        raise
    except WorkbenchError as exc:
        return Outcome(None, (), time.perf_counter() - start, str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate is that candidate's rejection
        return Outcome(None, (), time.perf_counter() - start, describe(exc), error=True)
    ratios = tuple(float(r) for r in ratios)
    if not math.isfinite(fitness):
        return Outcome(None, ratios, time.perf_counter() - start, f"fitness is {fitness}")
    return Outcome(float(fitness), ratios, time.perf_counter() - start)


def describe(exc: BaseException) -> str:
    """One line: the message of a user-facing error, else the exception's type and first line."""
    text = str(exc).strip().splitlines()
    if isinstance(exc, WorkbenchError) and text:
        return text[0]
    name = type(exc).__name__.lstrip("_")  # torch.linalg.LinAlgError is a _LinAlgError
    return f"{name}: {text[0]}" if text else name


class CheckpointedSearch:
    """The loop; subclasses say what a candidate is, how it is scored and how the search advances."""

    workers = 1  # queue entries evaluated together

    def __init__(self, store: RunStore, settings_json: dict, on_event: Callable[[object], None]):
        self.store = store
        self.settings_json = settings_json
        self.on_event = on_event
        self.state: dict | None = None
        self._before_errors: dict | None = None  # the state before the present run of unexpected errors

    # -- what a search defines ---------------------------------------------------------------------
    def initial_state(self) -> dict:
        """Must hold queue, evaluated, logged, done and best (None)."""
        raise NotImplementedError

    def resumed(self, state: dict) -> None:
        """A stored checkpoint is about to be continued (bring an older one up to date here)."""

    def cached(self, state: dict, text: str) -> bool:
        """Whether a queue entry is already scored (then it is passed over, not evaluated again)."""
        return False

    def evaluate(self, state: dict, texts: list[str], check) -> list[Outcome]:
        raise NotImplementedError

    def candidate(self, state: dict, index: int, text: str, outcome: Outcome) -> ev.Candidate:
        raise NotImplementedError

    def record(self, state: dict, candidate: ev.Candidate) -> bool:
        """Bookkeeping after a candidate was logged; True when it is the new best."""
        raise NotImplementedError

    def advance(self, state: dict) -> None:
        """The queue is empty: end a generation or stage, refill the queue or set done."""
        raise NotImplementedError

    def final_result(self, state: dict, check) -> dict:
        """final.json: "best" (a candidate's JSON or None), "held_out_perplexity" and anything else."""
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------------------------
    def begin(self) -> None:
        """Create the run folder with the initial state checkpointed, or load the checkpoint of the
        stored run (dropping log lines written after it)."""
        state = self.store.load_state() if self.store.exists else None
        if state is not None:
            self.resumed(state)
        if state is None:
            state = self.initial_state()
            if self.store.exists:  # a run made before the initial state was checkpointed
                self.store.save_state(state, None)
            else:
                self.store.create(self.settings_json, state)
        self.state = state

    def close(self) -> None:
        """Release what the evaluator holds outside this process (a cluster's workers)."""
        release = getattr(getattr(self, "evaluator", None), "close", None)
        if release is not None:
            release()

    def run(self, control: Control) -> ev.SearchFinished:
        if self.state is None:
            self.begin()
        state = self.state
        while not state["done"]:
            if state["queue"]:
                self._evaluate_next(state, control)
            else:
                self.advance(state)
                self._checkpoint(state)
        return self._finish(control)

    def _evaluate_next(self, state: dict, control: Control) -> None:
        control.checkpoint()
        if not state.get("errors_in_a_row") or self._before_errors is None:  # (None: resumed amid a run of them)
            self._before_errors = copy.deepcopy(state)
        chunk = state["queue"][: self.workers]
        todo = [text for text in chunk if not self.cached(state, text)]
        for i, text in enumerate(todo):
            self.on_event(ev.CandidateStarted(state["evaluated"] + i, state.get("generation", 0), text))
        outcomes = self.evaluate(state, todo, control.checkpoint) if todo else []
        for text, outcome in zip(todo, outcomes):
            cand = self.candidate(state, state["evaluated"], text, outcome)
            self.store.append(cand)
            state["evaluated"] += 1
            state["logged"] += 1
            state["errors_in_a_row"] = state.get("errors_in_a_row", 0) + 1 if outcome.error else 0
            if self.record(state, cand):
                self.on_event(ev.NewBest(cand))
            self.on_event(ev.CandidateScored(cand) if cand.scored else ev.CandidateRejected(cand))
        state["queue"] = state["queue"][len(chunk):]
        if state.get("errors_in_a_row", 0) >= MAX_ERRORS_IN_A_ROW:
            self.state = self._before_errors  # failures of the machine are no verdict on these candidates
            self._checkpoint(self.state)
            raise WorkbenchError(f"{MAX_ERRORS_IN_A_ROW} candidates in a row failed (the last: "
                                 f"{outcomes[-1].reason}); the run is kept as it was before them: fix the cause, "
                                 "then resume to score them again")
        self._checkpoint(state)
        if todo:
            control.candidate_done()

    def _checkpoint(self, state: dict) -> None:
        best = ev.Candidate.from_json(state["best"]) if state["best"] else None
        self.store.save_state(state, best)
        self.on_event(ev.CheckpointWritten(str(self.store.folder), state["evaluated"]))

    def _finish(self, control: Control) -> ev.SearchFinished:
        final = self.store.final()
        if final is None:
            final = self.final_result(self.state, control.checkpoint)
            self.store.write_final(final)
        best = ev.Candidate.from_json(final["best"]) if final["best"] else None
        finished = ev.SearchFinished(best, final["held_out_perplexity"], final.get("zero_shot", {}),
                                     final.get("second_corpus", {}))
        self.on_event(finished)
        return finished
