"""Allocations given block by block: a profile (one sparsity per block, as the profile search finds them)
and the one-knob baselines, in text forms every command and pane accepts.

    profile:0.48,0.72,0.70,...   per-block sparsities; at another target every block moves by one shift
                                 (clipped to [0.01, 0.99]) so the parameter-weighted mean is the target
    first:0.3                    block 0 at 0.3, every other block alike with the weighted mean kept
    ends:0.3                     the first and the last block at 0.3, the others alike
    atp:0.004                    ATP (Huang et al., ICML 2025): sparsity rising with depth as an arithmetic
                                 progression of common difference 0.004 about the target

`first`, `ends` and `atp` without a value are the baselines: the session picks the value on the fitness
split, from the grid `tuning_grid` gives (ATP's as its reference search.sh walks it).
"""

from __future__ import annotations

import math

from engine.allocation.mapping import RATIO_MAX, RATIO_MIN, rebalance
from engine.errors import InvalidFunctionError, WorkbenchError

PROFILE = "profile"
PROTECTED = ("first", "ends")  # the blocks kept denser: the first, or the first and the last
PROTECT_STEP = 0.1  # the level grid the baselines pick from: target - 0.1, target - 0.2, ... above 0
ATP = "atp"
ATP_STEP = 0.002  # the reference's beta grid: 0.002, 0.004, ... up to the largest legal beta
ATP_MAX_TRIES = 20  # more betas than this (models of fewer than ~27 blocks) take every k-th of the grid
TUNED = (*PROTECTED, ATP)  # the baselines whose one value the session picks on the fitness split
TUNED_KNOB = {"first": "level", "ends": "level", ATP: "beta"}  # what that value is, in recorded parameters


def is_block_form(method: str) -> bool:
    """Whether `method` is one of this module's text forms (with a value after the colon)."""
    return method.partition(":")[0].strip() in (PROFILE, *TUNED) and ":" in method


def parse_block_form(method: str) -> tuple[str, tuple[float, ...]]:
    """(kind, values) of a profile or protect text; one line naming what is wrong otherwise."""
    kind, _, rest = (s.strip() for s in method.partition(":"))
    try:
        values = tuple(float(v) for v in rest.replace(" ", ",").split(",") if v)
    except ValueError:
        raise InvalidFunctionError(f"'{method}': expected {kind}:<numbers separated by commas>", op=kind) from None
    if not values or any(not math.isfinite(v) or not 0 <= v < 1 for v in values):
        raise InvalidFunctionError(f"'{method}': every sparsity must be a number in [0, 1)", op=kind)
    if kind in PROTECTED and len(values) != 1:
        raise InvalidFunctionError(f"'{method}': {kind} takes one sparsity, for the protected block(s)", op=kind)
    if kind == ATP and len(values) != 1:
        raise InvalidFunctionError(f"'{method}': atp takes one value, the common difference beta", op=kind)
    return kind, values


def block_form_text(kind: str, values) -> str:
    """The canonical text: values with at most 4 decimals."""
    return f"{kind}:" + ",".join(f"{round(float(v), 4):g}" for v in values)


def profile_text(ratios) -> str:
    return block_form_text(PROFILE, ratios)


def block_form_ratios(method: str, weights: list[int], target: float) -> list[float]:
    """Per-block ratios of a profile or protect text, with the `weights`-weighted mean exactly `target`."""
    kind, values = parse_block_form(method)
    n = len(weights)
    if kind == PROFILE:
        if len(values) != n:
            raise WorkbenchError(f"the profile has {len(values)} sparsities but the model has {n} blocks")
        return rebalance(list(values), weights, target)
    if kind == ATP:
        return atp_ratios(values[0], weights, target)
    protected = {0} if kind == "first" or n == 1 else {0, n - 1}
    level = values[0]
    rest_weight = sum(w for i, w in enumerate(weights) if i not in protected)
    held = sum(weights[i] for i in protected) * level
    rest = (target * sum(weights) - held) / rest_weight if rest_weight else target
    if not RATIO_MIN <= rest <= RATIO_MAX:
        raise WorkbenchError(f"'{method}': the other blocks would need sparsity {rest:.3f} to keep the mean at "
                             f"{target}; choose a level nearer the target")
    return rebalance([level if i in protected else rest for i in range(n)], weights, target)


def protect_levels(target: float) -> list[float]:
    """The levels a protect baseline tries: below the target in steps of PROTECT_STEP, down to 0."""
    levels = (round(target - PROTECT_STEP * k, 4) for k in range(1, int(target / PROTECT_STEP) + 1))
    return [level for level in levels if level >= RATIO_MIN]


def atp_bound(target: float, n_blocks: int) -> float:
    """The largest legal ATP beta: the first block stays at or above 0, the last at or below 1."""
    return min(2 * target, 2 * (1 - target)) / (n_blocks - 1) if n_blocks > 1 else 0.0


def atp_ratios(beta: float, weights: list[int], target: float) -> list[float]:
    """ATP's reference: block i of L at target + beta * (i - (L - 1) / 2), an illegal beta refused; then
    clipped to [0.01, 0.99] and shifted so the weighted mean is exact (a no-op for blocks of equal size
    within the clip)."""
    n = len(weights)
    bound = atp_bound(target, n)
    if beta > bound + 1e-12:
        raise WorkbenchError(f"'atp:{beta:g}': beta above {bound:.4f} (min(2S, 2(1 - S)) / (L - 1) at S {target}, "
                             f"L {n} blocks) would take a block outside [0, 1]")
    return rebalance([target + beta * (i - (n - 1) / 2) for i in range(n)], weights, target)


def tuning_grid(kind: str, target: float, n_blocks: int) -> list[str]:
    """The texts a tuned baseline (TUNED) picks from: protect levels, or ATP's betas up to the legal bound."""
    if kind == ATP:
        bound = atp_bound(target, n_blocks)
        steps = int(bound / ATP_STEP + 1e-9)
        every = -(-steps // ATP_MAX_TRIES)
        return [block_form_text(ATP, (round(ATP_STEP * k, 6),)) for k in range(every, steps + 1, every)]
    return [block_form_text(kind, (level,)) for level in protect_levels(target)]
