"""Sparsity profiles: the genome of the profile search (EvoPress), one sparsity per unit (a block, an
attention or MLP group, or a linear: engine.allocation.units).

A level switch moves the same number of weights from one unit to another: `step` times the smallest unit's
size, so a unit twice as large moves half the sparsity, and the parameter-weighted mean stays at the target
(texts keep 4 decimals, and the allocation removes what rounding leaves by one shift). Every unit stays on its
start's grid: the start's sparsity plus whole steps of its own size.
"""

from __future__ import annotations

import random

from engine.allocation.mapping import RATIO_MAX, RATIO_MIN
from engine.allocation.profiles import TUNED, parse_block_form, profile_text, tuning_grid

MAX_SWITCHES = 3  # a mutation makes 1..MAX_SWITCHES level switches
START_BASELINES = ("uniform", "owl", "alpha", "dlp")  # with every value of the tuned baselines' grids


def start_methods(target: float, blocks: int) -> list[str]:
    """The simple allocations a search starts from: uniform, OWL, AlphaPruning, DLP, and ATP, protect-first
    and protect-ends at every value of their grids (scoring them all is how the session picks one)."""
    return [*START_BASELINES, *(text for kind in TUNED for text in tuning_grid(kind, target, blocks))]


def mutate_profile(text: str, weights: list[int], step: float, rng: random.Random) -> str:
    """A copy of the profile with 1..MAX_SWITCHES level switches between two units (`weights`: their sizes)."""
    values = list(parse_block_form(text)[1])
    quantum = step * min(weights)
    steps = [quantum / w for w in weights]
    for _ in range(rng.randint(1, MAX_SWITCHES)):
        up = [i for i, v in enumerate(values) if v + steps[i] <= RATIO_MAX]
        down = [i for i, v in enumerate(values) if v - steps[i] >= RATIO_MIN]
        if not up or not down:
            continue
        i = rng.choice(up)
        j = rng.choice([u for u in down if u != i] or [i])
        if i != j:
            values[i] += steps[i]
            values[j] -= steps[j]
    return profile_text(values)
