"""Pruning the block linears of a model to per-linear ratios.

Two ways, chosen by the metric:

* **Masked** (magnitude and Wanda, unstructured): the model's weights are never changed. Each weight's
  rank within its row (int16, computed once; within its matrix for `magnitude`, int32) decides: the k
  lowest-ranked weights of a row (of the matrix) are pruned,
  `where(rank >= k, W, 0)`. A `MaskedPruning` materialises the pruned weights of one decoder block at a
  time, for the duration of that block's forward (hooks), so pruning at other ratios costs nothing up
  front and the device holds the dense model, the ranks and one block's pruned copy: about 2x the weight
  bytes in bf16, 1.5x in float32, whatever the model's size.
* **In place** (SparseGPT, which updates the kept weights, and N:M patterns): the weights are pruned
  where they are, after a host copy of the dense block weights is taken (`HostBackup`) to restore them.
"""

from __future__ import annotations

from typing import Callable

import torch

from engine.architecture import Block
from engine.calibration import CalibrationStats
from engine.errors import WorkbenchError
from engine.metrics import (NMPattern, check_metric, element_scores, is_magnitude, matrix_ranks, nm_prune_mask,
                            per_matrix, prune_count, row_ranks)
from engine.progress import Progress, no_progress
from engine.sparsegpt import sparsegpt_prune_


def check_ratios(linears, ratios: dict[str, float]) -> None:
    missing = set(linears) - set(ratios)
    if missing:
        raise ValueError(f"no ratio for {sorted(missing)[0]}")
    for name in linears:
        ratio = ratios[name]
        if not 0.0 <= ratio < 1.0 or ratio != ratio:
            raise WorkbenchError(f"invalid sparsity ratio {ratio} for {name}")


class Pruner:
    """Scores, ranks and prunes the block linears for one metric (and optional N:M pattern).

    Scores and ranks are read from `dense(name)`, by default the linears' current weights."""

    def __init__(self, blocks: list[Block], metric: str, stats: CalibrationStats | None,
                 pattern: NMPattern | None = None, dense: Callable[[str], torch.Tensor] | None = None):
        self.metric = check_metric(metric)
        if not is_magnitude(metric) and stats is None:
            raise ValueError(f"metric {metric} needs calibration statistics")
        if metric == "sparsegpt" and (stats is None or stats.hessians is None):
            raise ValueError("sparsegpt needs calibration Hessians")
        self.blocks = blocks
        self.stats = stats
        self.pattern = pattern
        self.linears = {name: lin for b in blocks for name, lin in b.linears.items()}
        self._dense = dense  # no lambda over self here: a reference cycle would keep a block's statistics alive
        self._ranks: dict[str, torch.Tensor] = {}

    @property
    def masked(self) -> bool:
        """Whether this pruner works from ranks without changing the weights."""
        return self.metric != "sparsegpt" and self.pattern is None

    def dense(self, name: str) -> torch.Tensor:
        return self._dense(name) if self._dense is not None else self.linears[name].weight.data

    def scores(self, name: str) -> torch.Tensor:
        norm = None if is_magnitude(self.metric) else self.stats.feature_norm(name)
        return element_scores(self.metric, self.dense(name), norm)

    def ranks(self, name: str) -> torch.Tensor:
        """Each weight's position in its row's ascending score order (int16 where rows allow), or in its
        matrix's for a per-matrix metric (int32), kept."""
        if name not in self._ranks:
            ranks = matrix_ranks if per_matrix(self.metric) else row_ranks
            self._ranks[name] = ranks(self.scores(name))
        return self._ranks[name]

    def prepare(self, progress: Progress = no_progress) -> None:
        """Compute every rank now (a search's candidates then all take the same time)."""
        for i, name in enumerate(self.linears):
            self.ranks(name)
            progress("ranking weights", i + 1, len(self.linears))

    def rank_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in list(self._ranks.values()))  # (another thread may add)

    def pruned(self, name: str, dense: torch.Tensor, ratio: float) -> torch.Tensor:
        """A new tensor: `dense` with the `ratio` lowest-scoring weights of every row (of the whole matrix for a
        per-matrix metric) set to zero."""
        k = prune_count(dense.numel() if per_matrix(self.metric) else dense.shape[1], ratio)
        if not k:
            return dense
        return torch.where(self.ranks(name) >= k, dense, dense.new_zeros(()))

    @torch.no_grad()
    def prune_in_place(self, ratios: dict[str, float], progress: Progress = no_progress) -> None:
        """SparseGPT (weights updated) or an N:M mask, written into the weights."""
        check_ratios(self.linears, ratios)
        for i, (name, linear) in enumerate(self.linears.items()):
            weight = linear.weight
            if self.metric == "sparsegpt":
                sparsegpt_prune_(weight, self.stats.hessians[name], ratios[name], self.pattern)
            elif self.pattern is not None:
                weight.masked_fill_(nm_prune_mask(self.scores(name), self.pattern), 0)
            else:
                weight.copy_(self.pruned(name, weight, ratios[name]))
            progress("pruning", i + 1, len(self.linears))


class MaskedPruning:
    """Pruned weights for one decoder block at a time, in that block's forward only.

    A pre-hook on each block swaps its linears' weights for pruned copies, a hook after the block swaps the
    dense ones back; `remove` undoes everything (also after a forward that raised)."""

    def __init__(self, blocks: list[Block], pruner: Pruner, ratios: dict[str, float]):
        check_ratios(pruner.linears, ratios)
        self.blocks = blocks
        self.pruner = pruner
        self.ratios = ratios
        self.dense = {name: lin.weight.data for b in blocks for name, lin in b.linears.items()}
        self._handles = []
        for block in blocks:
            self._handles.append(block.module.register_forward_pre_hook(self._swap_in(block)))
            self._handles.append(block.module.register_forward_hook(self._swap_out(block)))

    def _swap_in(self, block: Block):
        def hook(module, args):
            with torch.no_grad():
                for name, lin in block.linears.items():
                    lin.weight.data = self.pruner.pruned(name, self.dense[name], self.ratios[name])
        return hook

    def _swap_out(self, block: Block):
        def hook(module, args, output):
            for name, lin in block.linears.items():
                lin.weight.data = self.dense[name]
        return hook

    @torch.no_grad()
    def write(self) -> None:
        """Write the pruned weights into the model for good (export); the hooks go."""
        self.remove()
        for name, lin in self.pruner.linears.items():
            lin.weight.copy_(self.pruner.pruned(name, self.dense[name], self.ratios[name]))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for name, lin in self.pruner.linears.items():
            lin.weight.data = self.dense[name]


class HostBackup:
    """A host copy of every block linear's dense weight, taken before the weights change in place
    (pinned when the weights are on a GPU, so restoring is fast)."""

    def __init__(self, blocks: list[Block]):
        self.linears = {name: lin for b in blocks for name, lin in b.linears.items()}
        self.weights = {}
        for name, lin in self.linears.items():
            w = lin.weight.detach()
            host = torch.empty(w.shape, dtype=w.dtype, pin_memory=w.is_cuda)
            self.weights[name] = host.copy_(w)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights.values())

    @torch.no_grad()
    def restore(self) -> None:
        for name, lin in self.linears.items():
            lin.weight.copy_(self.weights[name], non_blocking=True)
        if any(lin.weight.is_cuda for lin in self.linears.values()):
            torch.cuda.synchronize()
