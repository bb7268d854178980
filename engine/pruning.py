"""Apply per-linear sparsity ratios to a model in place, and restore the dense weights."""

from __future__ import annotations

import torch

from engine.architecture import Block
from engine.calibration import CalibrationStats
from engine.errors import WorkbenchError
from engine.metrics import NMPattern, check_metric, element_scores, nm_prune_mask, prune_count, row_order
from engine.progress import Progress, no_progress
from engine.sparsegpt import sparsegpt_prune_


class Pruner:
    """Prunes from `dense` (a copy of every block linear's weight, see `dense_copy`) and, for Wanda and
    magnitude, each row's score order, computed on first use and kept.

    `apply(ratios)` rebuilds the pruned weights from those caches, so pruning again at other ratios
    costs a copy and a scatter per linear, not a new scoring pass.
    """

    def __init__(self, blocks: list[Block], dense: dict[str, torch.Tensor], metric: str,
                 stats: CalibrationStats | None, pattern: NMPattern | None = None):
        self.metric = check_metric(metric)
        if metric != "magnitude" and stats is None:
            raise ValueError(f"metric {metric} needs calibration statistics")
        if metric == "sparsegpt" and (stats is None or stats.hessians is None):
            raise ValueError("sparsegpt needs calibration Hessians")
        self.blocks = blocks
        self.stats = stats
        self.pattern = pattern
        self.linears = {name: lin for b in blocks for name, lin in b.linears.items()}
        self.dense = dense
        self._orders: dict[str, torch.Tensor] = {}

    def scores(self, name: str) -> torch.Tensor:
        norm = None if self.metric == "magnitude" else self.stats.feature_norm(name)
        return element_scores(self.metric, self.dense[name], norm)

    def order_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._orders.values())

    @torch.no_grad()
    def apply(self, ratios: dict[str, float], progress: Progress = no_progress) -> dict[str, float]:
        """Prune every linear to its ratio (ignored under an N:M pattern). Returns achieved sparsity."""
        missing = set(self.linears) - set(ratios)
        if missing:
            raise ValueError(f"no ratio for {sorted(missing)[0]}")
        achieved = {}
        for i, (name, linear) in enumerate(self.linears.items()):
            ratio = ratios[name]
            if not 0.0 <= ratio < 1.0 or ratio != ratio:
                raise WorkbenchError(f"invalid sparsity ratio {ratio} for {name}")
            weight = linear.weight
            weight.copy_(self.dense[name])
            if self.metric == "sparsegpt":
                sparsegpt_prune_(weight, self.stats.hessians[name], ratio, self.pattern)
            elif self.pattern is not None:
                weight.masked_fill_(nm_prune_mask(self.scores(name), self.pattern), 0)
            else:
                k = prune_count(weight.shape[1], ratio)
                if k:
                    weight.scatter_(1, self._order(name)[:, :k].long(), 0)
            achieved[name] = (weight == 0).sum().item() / weight.numel()
            progress("pruning", i + 1, len(self.linears))
        return achieved

    def _order(self, name: str) -> torch.Tensor:
        if name not in self._orders:
            self._orders[name] = row_order(self.scores(name))
        return self._orders[name]


def dense_copy(blocks: list[Block]) -> dict[str, torch.Tensor]:
    """A copy of every block linear's weight, by name."""
    return {name: lin.weight.detach().clone() for b in blocks for name, lin in b.linears.items()}


@torch.no_grad()
def restore_dense(blocks: list[Block], dense: dict[str, torch.Tensor]) -> None:
    """Copy the dense weights back into every block linear."""
    for b in blocks:
        for name, lin in b.linears.items():
            lin.weight.copy_(dense[name])
