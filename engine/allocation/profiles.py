"""Allocations given block by block: a profile (one sparsity per block, as the profile search finds them)
and the "protect the first block" baselines, in text forms every command and pane accepts.

    profile:0.48,0.72,0.70,...   per-block sparsities; at another target every block moves by one shift
                                 (clipped to [0.01, 0.99]) so the parameter-weighted mean is the target
    first:0.3                    block 0 at 0.3, every other block alike with the weighted mean kept
    ends:0.3                     the first and the last block at 0.3, the others alike

`first` and `ends` without a level are the baselines: the session picks the level on the fitness split.
"""

from __future__ import annotations

import math

from engine.allocation.mapping import RATIO_MAX, RATIO_MIN, rebalance
from engine.errors import InvalidFunctionError, WorkbenchError

PROFILE = "profile"
PROTECTED = ("first", "ends")  # the blocks kept denser: the first, or the first and the last
PROTECT_STEP = 0.1  # the level grid the baselines pick from: target - 0.1, target - 0.2, ... above 0


def is_block_form(method: str) -> bool:
    """Whether `method` is one of this module's text forms (with a value after the colon)."""
    return method.partition(":")[0].strip() in (PROFILE, *PROTECTED) and ":" in method


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
