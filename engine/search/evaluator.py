"""Candidate evaluation on one loaded model. engine.search.cluster.ClusterEvaluator has the same interface
(`workers`, `prepare`, `ratios`, `unit_params`, `profiles`, `distilled`, `evaluate`, `held_out`, `zero_shot`) over
Ray workers, each holding one of these."""

from __future__ import annotations

from typing import Protocol

from engine.allocation.profiles import TUNED, profile_text, tuning_grid
from engine.allocation.units import exact_granularity, unit_means, unit_params
from engine.choices import FITNESS
from engine.errors import WorkbenchError
from engine.progress import Progress, no_progress
from engine.search.core import Outcome, attempt
from engine.session import Session


class Evaluator(Protocol):
    workers: int

    def ratios(self, texts: list[str]) -> list[tuple[float, ...] | str]:
        """Each text's candidate ratios (no forward: per block, or per unit where finer), or why it is invalid."""
        ...

    def unit_params(self, granularity: str) -> list[int]:
        """Parameters of the pruned linears of each unit (engine.allocation.units)."""
        ...

    def profiles(self, texts: list[str], granularity: str) -> list[str | None]:
        """Each text's allocation as a profile of `granularity`, or finer where its allocation needs it to stay
        what it is (engine.allocation.units.exact_granularity); None where it cannot allocate."""
        ...

    def distilled(self, methods: list[str]) -> list[str]:
        """The palette function nearest each method's block ratios (those the model cannot allocate left out)."""
        ...

    def evaluate(self, texts: list[str], check: Progress, stage: int = 0) -> list[Outcome]:
        """One outcome per text at selection `stage`: its fitness and block ratios, or why it was rejected.

        `check` is called often (every forward batch) and may raise to abandon the batch."""
        ...


START_DISTILL = {"pairs": 0, "finalists": 8}  # single pre-process ops; the 8 best rough fits mapped exactly


class SessionEvaluator:
    """Scores candidates on one model: allocate from cached block samples, prune from the cached
    dense weights and row orders, one forward over the fitness split."""

    workers = 1

    def __init__(self, session: Session, sparsity: float, metric: str, fitness: str,
                 stage_tokens: tuple[int | None, ...] = (None,)):
        """`stage_tokens`: fitness tokens of each selection stage (None: the whole fitness split)."""
        if fitness not in FITNESS:
            raise WorkbenchError(f"unknown fitness '{fitness}'; use one of {', '.join(FITNESS)}")
        self.session = session
        self.sparsity = sparsity
        self.metric = metric
        self.fitness = fitness
        self.stage_tokens = stage_tokens

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

    def held_out(self, methods: list[str], check: Progress, corpus: str | None = None) -> dict[str, float]:
        """Perplexity on the evaluation split (never seen by the search) for each method or text; with `corpus`,
        on that corpus's held-out documents."""
        return {m: self.session.score(m, self.sparsity, self.metric, "evaluation", progress=check, corpus=corpus)[1]
                for m in methods}

    def zero_shot(self, methods: list[str], tasks: tuple[str, ...], limit: int | None, check: Progress) -> dict:
        """Zero-shot accuracy (engine.zeroshot) of the model pruned by each method: method -> task -> score."""
        out = {}
        for method in methods:
            with self.session.lock:
                self.session.prune(self.session.allocate(method, self.sparsity, self.metric), self.metric,
                                   progress=check)
                out[method] = self.session.zero_shot(tasks, limit, check)
        return out

    def ratios(self, texts: list[str]) -> list[tuple[float, ...] | str]:
        out = []
        for text in texts:
            try:
                out.append(self.session.allocate(text, self.sparsity, self.metric).candidate_ratios)
            except WorkbenchError as exc:
                out.append(str(exc))
        return out

    def unit_params(self, granularity: str) -> list[int]:
        return unit_params(self.session.blocks, granularity)

    def profiles(self, texts: list[str], granularity: str) -> list[str | None]:
        """Each allocation's linear ratios averaged over every unit (their weighted mean), the units those of
        `granularity` or of the first finer one that holds the allocation exactly."""
        out = []
        blocks = self.session.blocks
        for text in texts:
            try:
                ratios = self.session.allocate(text, self.sparsity, self.metric).linear_ratios
            except WorkbenchError:
                out.append(None)
                continue
            out.append(profile_text(unit_means(blocks, exact_granularity(blocks, granularity, ratios), ratios)))
        return out

    def distilled(self, methods: list[str]) -> list[str]:
        """engine.allocation.distill of each method's block ratios, with the effort of START_DISTILL (about 4 s a
        method on the default model on 2 CPU cores, against 35 s for the closest); a tuned baseline (first, ends,
        atp) at the middle of its grid, not scored: the search tunes the function's lam from there."""
        from engine.allocation.distill import distill

        inputs = self.session.allocation_inputs(self.metric)
        out = []
        for method in methods:
            if method in TUNED:
                grid = tuning_grid(method, self.sparsity, len(self.session.blocks))
                method = grid[len(grid) // 2]
            try:
                ratios = self.session.allocate(method, self.sparsity, self.metric).block_ratios
                out.append(distill(list(ratios), inputs, self.sparsity, **START_DISTILL).function)
            except WorkbenchError:
                continue
        return out

    def evaluate(self, texts: list[str], check: Progress, stage: int = 0) -> list[Outcome]:
        return [self.evaluate_one(t, check, stage) for t in texts]

    def evaluate_one(self, text: str, check: Progress = no_progress, stage: int = 0) -> Outcome:
        return attempt(lambda: self.score(text, check, stage))

    def score_outcome(self, text: str, stage: int = 0) -> Outcome:
        """A cluster worker's call: one candidate."""
        return self.evaluate_one(text, stage=stage)

    def score(self, text: str, check: Progress, stage: int = 0) -> tuple[float, tuple[float, ...]]:
        allocation = self.session.allocate(text, self.sparsity, self.metric)
        tokens = self.stage_tokens[stage]
        with self.session.lock:
            self.session.prune(allocation, self.metric, progress=check)
            score = (self.session.perplexity("fitness", progress=check, tokens=tokens) if self.fitness == "ppl"
                     else self.session.kl("fitness", progress=check, tokens=tokens))
        return score, allocation.candidate_ratios
