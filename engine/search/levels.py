"""Per-block sparsity profiles: the genome of the profile search (EvoPress).

A level switch moves one step of sparsity from one block to another block with the same number of
parameters, so the parameter-weighted mean stays at the target (blocks of a decoder-only model all have
the same size; texts keep 4 decimals, and the allocation removes what rounding leaves by one shift).
Every block stays on its start's grid: the start's sparsity plus whole steps.
"""

from __future__ import annotations

import random

from engine.allocation.mapping import RATIO_MAX, RATIO_MIN
from engine.allocation.profiles import (block_form_ratios, block_form_text, parse_block_form, profile_text,
                                        protect_levels)
from engine.errors import WorkbenchError

MAX_SWITCHES = 3  # a mutation makes 1..MAX_SWITCHES level switches


def start_profiles(target: float, weights: list[int]) -> list[str]:
    """Where the profile search starts: uniform, and protect-first at each level of its grid (the parent
    is the best of them, so the search begins from the best simple allocation)."""
    starts = [profile_text([target] * len(weights))]
    for level in protect_levels(target):
        try:
            starts.append(profile_text(block_form_ratios(block_form_text("first", (level,)), weights, target)))
        except WorkbenchError:
            continue
    return starts


def mutate_profile(text: str, weights: list[int], step: float, rng: random.Random) -> str:
    """A copy of the profile with 1..MAX_SWITCHES level switches between blocks of equal size."""
    values = list(parse_block_form(text)[1])
    groups = {}
    for i, w in enumerate(weights):
        groups.setdefault(w, []).append(i)
    pairs = [g for g in groups.values() if len(g) >= 2]
    if not pairs:
        return text
    for _ in range(rng.randint(1, MAX_SWITCHES)):
        group = rng.choice(pairs)
        up = [i for i in group if values[i] + step <= RATIO_MAX]
        down = [i for i in group if values[i] - step >= RATIO_MIN]
        if not up or not down:
            continue
        i = rng.choice(up)
        j = rng.choice([b for b in down if b != i] or [i])
        if i != j:
            values[i] += step
            values[j] -= step
    return profile_text(values)
