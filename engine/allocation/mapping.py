"""Turn per-block (or per-linear) values into sparsity ratios with an exact weighted mean."""

from __future__ import annotations

import math
from typing import Callable

from engine.errors import InvalidFunctionError, WorkbenchError

RATIO_MIN, RATIO_MAX = 0.01, 0.99
TOLERANCE = 1e-9


def check_target(target: float) -> float:
    if not isinstance(target, (int, float)) or not math.isfinite(target) or not 0 < target < 1:
        raise WorkbenchError(f"sparsity must be between 0 and 1, exclusive (got {target})")
    if not RATIO_MIN <= target <= RATIO_MAX:
        raise WorkbenchError(f"sparsity {target} is outside the allowed range [{RATIO_MIN}, {RATIO_MAX}]")
    return float(target)


def spread_ratios(values: list[float], weights: list[int], target: float, lam: float, direction: int) -> list[float]:
    """n = minmax(values); s = target + 2*lam*(n - mean(n)) (n flipped when direction < 0),
    clipped to [0.01, 0.99] and shifted so the weighted mean is exactly `target`."""
    n = _minmax(values)
    if direction < 0:
        n = [1.0 - x for x in n]
    mean_n = sum(n) / len(n)
    return rebalance([target + 2 * lam * (x - mean_n) for x in n], weights, target)


def scaled_ratios(values: list[float], weights: list[int], target: float, eps: float) -> list[float]:
    """AlphaPruning's multiplicative mapping: r = (1 - eps) + 2*eps*minmax(values), then every ratio
    target*r*c with one factor c so that the weighted mean is `target`: ratios spread about 2*eps*target.
    (Clipped to [0.01, 0.99] before c is solved, where a ratio would leave that range.)"""
    r = [1 - eps + 2 * eps * x for x in _minmax(values)]
    return solve_weighted_mean(lambda c: [c * target * x for x in r], weights, target, 0.0, 1.0 / (target * min(r)))


def _minmax(values: list[float]) -> list[float]:
    """Values scaled to [0, 1] (all 0 when they are equal: the mapping then gives uniform ratios)."""
    lo, hi = min(values), max(values)
    span = hi - lo
    if not math.isfinite(span):
        raise InvalidFunctionError("mapping: block values span an infinite range", op="mapping")
    return [(v - lo) / span if span > 0 else 0.0 for v in values]


def rebalance(ratios: list[float], weights: list[int], target: float) -> list[float]:
    """Clip to [0.01, 0.99] and add one shift so that the weighted mean equals `target`."""
    if any(not math.isfinite(r) for r in ratios):
        raise InvalidFunctionError("mapping: a ratio is not finite", op="mapping")
    return solve_weighted_mean(lambda c: [r + c for r in ratios], weights, target, -2.0, 2.0)


def solve_weighted_mean(family: Callable[[float], list[float]], weights: list[int], target: float,
                        lo: float, hi: float) -> list[float]:
    """Find c in [lo, hi] with weighted mean of clip(family(c)) == target; family increasing in c."""
    check_target(target)
    total = float(sum(weights))

    def mean_at(c):
        clipped = [min(RATIO_MAX, max(RATIO_MIN, r)) for r in family(c)]
        return sum(w * r for w, r in zip(weights, clipped)) / total, clipped

    for _ in range(200):
        mid = 0.5 * (lo + hi)
        mean, _ = mean_at(mid)
        if mean < target:
            lo = mid
        else:
            hi = mid
    best = min((mean_at(lo), mean_at(hi)), key=lambda mr: abs(mr[0] - target))
    mean, ratios = best
    if abs(mean - target) > TOLERANCE:
        raise WorkbenchError(f"cannot reach mean sparsity {target} within [{RATIO_MIN}, {RATIO_MAX}] (got {mean})")
    # Remove the last rounding error on the largest-weight entry that has room to move.
    j = max((i for i, r in enumerate(ratios) if RATIO_MIN < r < RATIO_MAX), key=lambda i: weights[i], default=None)
    if j is not None:
        ratios[j] += (target - mean) * total / weights[j]
    return ratios
