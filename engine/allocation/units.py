"""The units an allocation can give one sparsity each, by granularity: whole blocks, each block's attention
and MLP groups (q, k, v, o apart from gate, up, down), or every linear. A profile's length says its
granularity: one value per block, two per block (attention, then MLP), or one per linear in model order.
"""

from __future__ import annotations

from engine.architecture import LINEAR_PATHS, Block, linear_path
from engine.errors import WorkbenchError

GROUPS = ("self_attn", "mlp")  # a group's linears: those whose path in the block starts with it
UNITS_PER_BLOCK = {"block": 1, "group": len(GROUPS), "linear": len(LINEAR_PATHS)}


def unit_linears(blocks: list[Block], granularity: str) -> list[list[str]]:
    """The linears of every unit, blocks in order (within a block: attention before MLP, linears in order)."""
    if granularity == "block":
        return [list(b.linears) for b in blocks]
    if granularity == "group":
        return [[n for n in b.linears if linear_path(n).startswith(g + ".")] for b in blocks for g in GROUPS]
    if granularity == "linear":
        return [[n] for b in blocks for n in b.linears]
    raise WorkbenchError(f"unknown granularity '{granularity}'; use one of {', '.join(UNITS_PER_BLOCK)}")


def granularity_of(count: int, blocks: int) -> str:
    """The granularity of a profile of `count` values on a model of `blocks` blocks; one line otherwise."""
    for granularity, per_block in UNITS_PER_BLOCK.items():
        if count == per_block * blocks:
            return granularity
    raise WorkbenchError(f"the profile has {count} sparsities but the model has {blocks} blocks (a profile gives one "
                         f"per block, {UNITS_PER_BLOCK['group'] * blocks} for attention and MLP apart, or "
                         f"{UNITS_PER_BLOCK['linear'] * blocks} for every linear)")


def unit_params(blocks: list[Block], granularity: str) -> list[int]:
    """Weights of each unit: what a level switch keeps the weighted mean over."""
    sizes = {n: lin.weight.numel() for b in blocks for n, lin in b.linears.items()}
    return [sum(sizes[n] for n in unit) for unit in unit_linears(blocks, granularity)]


def unit_means(blocks: list[Block], granularity: str, linear_ratios: dict[str, float]) -> list[float]:
    """Parameter-weighted mean of per-linear ratios over each unit."""
    sizes = {n: lin.weight.numel() for b in blocks for n, lin in b.linears.items()}
    return [sum(linear_ratios[n] * sizes[n] for n in unit) / sum(sizes[n] for n in unit)
            for unit in unit_linears(blocks, granularity)]


def exact_granularity(blocks: list[Block], coarsest: str, linear_ratios: dict[str, float]) -> str:
    """`coarsest`, or the first finer granularity whose every unit's linears share one ratio: the one whose
    unit means are the allocation itself (a `| groups` function, asked for per block, comes out per group)."""
    order = list(UNITS_PER_BLOCK)
    for granularity in order[order.index(coarsest):-1]:
        units = unit_linears(blocks, granularity)
        if all(max(linear_ratios[n] for n in u) - min(linear_ratios[n] for n in u) <= 1e-9 for u in units):
            return granularity
    return order[-1]
