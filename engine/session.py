"""A model with its data, calibration and caches: the object the CLI and the TUI drive."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import torch

from engine.allocation import Allocation, AllocationInputs, compute_allocation
from engine.architecture import Block, decoder_blocks
from engine.calibration import CalibrationStats, calibrate
from engine.corpus import Splits, split_corpus, token_windows
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.evaluation import DenseReference, perplexity
from engine.loading import LoadedModel
from engine.metrics import METRICS, NMPattern, check_metric, parse_pattern
from engine.progress import Progress, no_progress
from engine.pruning import Pruner, dense_copy, restore_dense


@dataclass(frozen=True)
class PruneResult:
    allocation: Allocation
    metric: str
    pattern: str | None
    linear_sparsity: dict[str, float]
    sparsity: float  # achieved, parameter-weighted over all block linears


class Session:
    """Loads data lazily and keeps what does not change between prunings: token windows,
    calibration statistics, one dense copy of the block weights, allocation inputs per metric."""

    def __init__(self, loaded: LoadedModel, data: DataConfig = DataConfig(), progress: Progress = no_progress):
        self.loaded = loaded
        self.model = loaded.model
        self.data = data
        self.progress = progress
        self._windows: dict[str, torch.Tensor] = {}
        self._calibration: CalibrationStats | None = None
        self._pruners: dict[tuple[str, str | None], Pruner] = {}
        self._inputs: dict[str, AllocationInputs] = {}
        self._references: dict[str, DenseReference] = {}
        self.pruned: PruneResult | None = None
        # Held around any prune-then-measure sequence when several threads share the model.
        self.lock = threading.RLock()

    @cached_property
    def blocks(self) -> list[Block]:
        return decoder_blocks(self.model)

    @cached_property
    def splits(self) -> Splits:
        return split_corpus(self.data.corpus, self.data.seed)

    @cached_property
    def dense(self) -> dict[str, torch.Tensor]:
        return dense_copy(self.blocks)

    def windows(self, split: str) -> torch.Tensor:
        if split not in self._windows:
            self._windows[split] = token_windows(self.loaded.tokenizer, self.splits, split,
                                                 self.data.tokens(split), self.data.seqlen)
        return self._windows[split]

    def calibration(self, hessians: bool = False, progress: Progress | None = None) -> CalibrationStats:
        """Calibration statistics, computed on first use (`progress` reports tokens and may raise to stop)."""
        if self._calibration is None or (hessians and self._calibration.hessians is None):
            self.restore()
            self._calibration = calibrate(self.model, self.blocks, self.windows("calibration"), hessians=hessians,
                                          batch_size=self.data.batch_size, progress=progress or self.progress)
        return self._calibration

    def pruner(self, metric: str, pattern: NMPattern | None = None, progress: Progress | None = None) -> Pruner:
        key = (check_metric(metric), str(pattern) if pattern else None)
        if key not in self._pruners:
            stats = None if metric == "magnitude" else self.calibration(metric == "sparsegpt", progress)
            self._pruners[key] = Pruner(self.blocks, self.dense, metric, stats, pattern)
        return self._pruners[key]

    def allocation_inputs(self, metric: str, progress: Progress | None = None) -> AllocationInputs:
        """Allocations read magnitude scores for magnitude and Wanda scores for Wanda and SparseGPT."""
        score_metric = _score_metric(metric)
        if score_metric not in self._inputs:
            scorer = self.pruner(score_metric, progress=progress)
            self._inputs[score_metric] = AllocationInputs(self.blocks, self.dense, scorer.scores,
                                                          seed=self.data.seed, sample_size=self.data.sample_size)
        return self._inputs[score_metric]

    def has_allocation_inputs(self, metric: str) -> bool:
        """Whether allocations for `metric` are ready without calibration or sampling."""
        key = _score_metric(metric)
        return key in self._inputs and "samples" in self._inputs[key].__dict__

    def allocate(self, method: str, target: float, metric: str = "wanda") -> Allocation:
        return compute_allocation(method, target, self.allocation_inputs(metric))

    def prune(self, allocation: Allocation, metric: str, pattern: NMPattern | None = None,
              progress: Progress | None = None) -> PruneResult:
        if pattern is not None and any(abs(r - pattern.ratio) > 1e-9 for r in allocation.linear_ratios.values()):
            raise WorkbenchError(f"an {pattern} pattern prunes every layer to {pattern.ratio:g}: use the uniform "
                                 f"allocation at sparsity {pattern.ratio:g}")
        achieved = self.pruner(metric, pattern, progress).apply(allocation.linear_ratios, progress or self.progress)
        params = {n: self.dense[n].numel() for n in achieved}
        overall = sum(achieved[n] * params[n] for n in achieved) / sum(params.values())
        self.pruned = PruneResult(allocation, metric, str(pattern) if pattern else None, achieved, overall)
        return self.pruned

    def score(self, method: str, target: float, metric: str, split: str = "evaluation",
              progress: Progress | None = None) -> tuple[Allocation, float]:
        """Allocate, prune and measure perplexity on `split`, holding the lock throughout."""
        allocation = self.allocate(method, target, metric)
        with self.lock:
            self.prune(allocation, metric, progress=progress)
            return allocation, self.perplexity(split, progress=progress)

    def restore(self) -> None:
        """Put the dense weights back (no-op when nothing is pruned)."""
        if self.pruned is not None:
            restore_dense(self.blocks, self.dense)
            self.pruned = None

    def perplexity(self, split: str = "evaluation", progress: Progress | None = None) -> float:
        return perplexity(self.model, self.windows(split), batch_size=self.data.batch_size,
                          progress=progress or self.progress, stage=f"{split} perplexity")

    def dense_reference(self, split: str, progress: Progress | None = None) -> DenseReference:
        if split not in self._references:
            pruned = self.pruned
            self.restore()
            self._references[split] = DenseReference(self.model, self.windows(split), batch_size=self.data.batch_size,
                                                      progress=progress or self.progress)
            if pruned is not None:
                self.prune(pruned.allocation, pruned.metric, parse_pattern(pruned.pattern))
        return self._references[split]

    def kl(self, split: str = "evaluation", progress: Progress | None = None) -> float:
        return self.dense_reference(split, progress).kl(self.model, progress or self.progress)

    def cache_bytes(self) -> dict[str, int]:
        """Memory held by the caches that make re-pruning cheap, by cache."""
        tensors = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
        out = {"dense weights": tensors(self.dense.values()) if "dense" in self.__dict__ else 0,
               "row orders": sum(p.order_bytes() for p in self._pruners.values()),
               "calibration": self._calibration.nbytes() if self._calibration else 0,
               "block samples": sum(tensors(s.matrix for s in i.samples) for i in self._inputs.values()
                                    if "samples" in i.__dict__),
               "dense references": sum(r.nbytes for r in self._references.values())}
        return out


def _score_metric(metric: str) -> str:
    """The scores allocations read: magnitude for magnitude, Wanda for Wanda and SparseGPT."""
    return "magnitude" if check_metric(metric) == "magnitude" else "wanda"


__all__ = ["METRICS", "DataConfig", "PruneResult", "Session"]
