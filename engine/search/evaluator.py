"""Candidate evaluation behind one interface, so several devices can score candidates in parallel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from engine.choices import FITNESS
from engine.errors import WorkbenchError
from engine.progress import Progress
from engine.search.core import Outcome, attempt
from engine.session import Session


class Evaluator(Protocol):
    workers: int

    def evaluate(self, texts: list[str], check: Progress) -> list[Outcome]:
        """One outcome per text: its fitness and block ratios, or why it was rejected.

        `check` is called often (every forward batch) and may raise to abandon the batch."""
        ...


class SessionEvaluator:
    """Scores candidates on one model: allocate from cached block samples, prune from the cached
    dense weights and row orders, one forward over the fitness split."""

    workers = 1

    def __init__(self, session: Session, sparsity: float, metric: str, fitness: str):
        if fitness not in FITNESS:
            raise WorkbenchError(f"unknown fitness '{fitness}'; use one of {', '.join(FITNESS)}")
        self.session = session
        self.sparsity = sparsity
        self.metric = metric
        self.fitness = fitness

    def prepare(self, progress: Progress) -> None:
        """Everything that does not depend on the candidate: calibration, samples, orders, references.
        `progress` is called often and may raise to abandon the preparation."""
        s = self.session
        with s.lock:
            s.windows("fitness")
            inputs = s.allocation_inputs(self.metric, progress=progress)
            inputs.samples  # noqa: B018 - computed once here
            s.prune(s.allocate("uniform", self.sparsity, self.metric), self.metric, progress=progress)
            if self.fitness == "kl":
                s.dense_reference("fitness", progress=progress)

    def held_out(self, methods: list[str], check: Progress) -> dict[str, float]:
        """Perplexity on the evaluation split (never seen by the search) for each method or text."""
        return {m: self.session.score(m, self.sparsity, self.metric, "evaluation", progress=check)[1]
                for m in methods}

    def evaluate(self, texts, check):
        return [self.evaluate_one(t, check) for t in texts]

    def evaluate_one(self, text: str, check: Progress) -> Outcome:
        return attempt(lambda: self.score(text, check))

    def score(self, text: str, check: Progress) -> tuple[float, tuple[float, ...]]:
        allocation = self.session.allocate(text, self.sparsity, self.metric)
        with self.session.lock:
            self.session.prune(allocation, self.metric, progress=check)
            score = (self.session.perplexity("fitness", progress=check) if self.fitness == "ppl"
                     else self.session.kl("fitness", progress=check))
        return score, allocation.block_ratios


class ParallelEvaluator:
    """One SessionEvaluator per device (e.g. one per visible GPU), candidates scored concurrently."""

    def __init__(self, evaluators: list[SessionEvaluator]):
        self.evaluators = evaluators
        self.workers = len(evaluators)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="candidate")

    def prepare(self, progress: Progress) -> None:
        list(self._pool.map(lambda e: e.prepare(progress), self.evaluators))

    def evaluate(self, texts, check):
        futures = [self._pool.submit(e.evaluate_one, t, check) for e, t in zip(self.evaluators, texts)]
        return [f.result() for f in futures]
