"""Random allocation functions, mutation and crossover: the variation operators of the search."""

from __future__ import annotations

import random
from dataclasses import replace

from engine.allocation.function import AllocationFunction
from engine.allocation.ops import PRE_OPS, REDUCTIONS, TRANSFORMS
from engine.choices import LAM_MIN, LAM_STEP, MAX_LAM

PRE = [op for op in PRE_OPS if op != "no_op"]
RED = list(REDUCTIONS)
TRA = [op for op in TRANSFORMS if op != "no_op"]
MAX_STAGE_OPS = 3


def random_function(rng: random.Random) -> AllocationFunction:
    return AllocationFunction(
        pre=tuple(rng.choice(PRE) for _ in range(rng.randint(0, 2))),
        reduction=rng.choice(RED),
        transform=tuple(rng.choice(TRA) for _ in range(rng.randint(0, 2))),
        lam=round(LAM_STEP * rng.randint(1, 10), 2),
        direction=rng.choice((1, -1)),
        groups=rng.random() < 0.5,
    )


def mutate(f: AllocationFunction, rng: random.Random) -> AllocationFunction:
    """One change: replace, insert or delete an op, swap the reduction, flip direction, move lam, or read the
    attention and MLP groups apart (or together again)."""
    kind = rng.choice(("pre", "transform", "reduction", "direction", "lam", "groups"))
    if kind == "groups":
        return replace(f, groups=not f.groups)
    if kind == "reduction":
        return replace(f, reduction=rng.choice([r for r in RED if r != f.reduction]))
    if kind == "direction":
        return replace(f, direction=-f.direction)
    if kind == "lam":
        lam = round(f.lam + rng.choice((-1, 1)) * LAM_STEP, 2)
        return replace(f, lam=min(MAX_LAM, max(LAM_MIN, lam)))
    ops, palette = (list(f.pre), PRE) if kind == "pre" else (list(f.transform), TRA)
    action = rng.choice(("replace", "insert", "delete"))
    if action == "insert" and len(ops) < MAX_STAGE_OPS or not ops:
        ops.insert(rng.randint(0, len(ops)), rng.choice(palette))
    elif action == "delete":
        del ops[rng.randrange(len(ops))]
    else:
        ops[rng.randrange(len(ops))] = rng.choice(palette)
    return replace(f, **{kind: tuple(ops)})


def crossover(a: AllocationFunction, b: AllocationFunction, rng: random.Random) -> AllocationFunction:
    """Each stage (pre list, reduction, transform list, lam, direction, groups) from one parent or the other."""
    pick = lambda x, y: x if rng.random() < 0.5 else y  # noqa: E731
    return AllocationFunction(pick(a.pre, b.pre), pick(a.reduction, b.reduction), pick(a.transform, b.transform),
                              pick(a.lam, b.lam), pick(a.direction, b.direction), groups=pick(a.groups, b.groups))

