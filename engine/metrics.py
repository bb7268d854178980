"""Element-wise importance scores and the masks they give (unstructured per row, or N:M)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from engine.choices import METRICS
from engine.errors import WorkbenchError



@dataclass(frozen=True)
class NMPattern:
    """Semi-structured sparsity: in every group of m consecutive inputs of a row, n are pruned."""

    n: int
    m: int

    @property
    def ratio(self) -> float:
        return self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def parse_pattern(text: str | None) -> NMPattern | None:
    """'2:4' -> NMPattern(2, 4); None or 'unstructured' -> None."""
    if text in (None, "", "unstructured"):
        return None
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not match or not 0 < int(match[1]) < int(match[2]):
        raise WorkbenchError(f"invalid N:M pattern '{text}': use e.g. 2:4 or 4:8 (0 < N < M)")
    return NMPattern(int(match[1]), int(match[2]))


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise WorkbenchError(f"unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    return metric


def is_magnitude(metric: str) -> bool:
    """Magnitude, with one threshold per matrix or per row: no calibration needed."""
    return metric.startswith("magnitude")


def per_matrix(metric: str) -> bool:
    """Whether `metric` prunes the lowest scores of a whole matrix (magnitude), not of each row."""
    return metric == "magnitude"


def element_scores(metric: str, weight: torch.Tensor, feature_norm: torch.Tensor | None) -> torch.Tensor:
    """|W| for magnitude; |W_ij| * ||X_j|| for Wanda (and for SparseGPT's allocation inputs)."""
    scores = weight.detach().abs().float()
    if is_magnitude(metric):
        return scores
    if feature_norm is None:
        raise ValueError(f"metric {metric} needs calibration feature norms")
    return scores * feature_norm.to(scores.device).float()[None, :]


def prune_count(row_length: int, ratio: float) -> int:
    """Weights pruned in a row of `row_length` at `ratio`."""
    return int(round(ratio * row_length))


def matrix_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Each element's position in the whole matrix's ascending score order (ties by position), int32: the
    `k` lowest-scoring weights of the matrix are those of rank < k."""
    order = scores.flatten().argsort(stable=True)
    positions = torch.arange(order.numel(), device=scores.device, dtype=torch.int32)
    return torch.empty_like(order, dtype=torch.int32).scatter_(0, order, positions).view_as(scores)


def row_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Each element's position in its row's ascending score order (ties by column), in the smallest int
    type: the `k` lowest-scoring weights of a row are those of rank < k."""
    order = scores.argsort(dim=1, stable=True)
    dtype = torch.int16 if scores.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    positions = torch.arange(scores.shape[1], device=scores.device, dtype=dtype).expand_as(order)
    return torch.empty_like(order, dtype=dtype).scatter_(1, order, positions)


def nm_prune_mask(scores: torch.Tensor, pattern: NMPattern) -> torch.Tensor:
    """True where a weight is pruned: the n lowest scores of each group of m along a row."""
    rows, cols = scores.shape
    if cols % pattern.m:
        raise WorkbenchError(f"{pattern} sparsity needs input sizes divisible by {pattern.m} (got {cols})")
    groups = scores.reshape(rows, cols // pattern.m, pattern.m)
    lowest = groups.topk(pattern.n, dim=2, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, lowest, True)
    return mask.reshape(rows, cols)
