"""Distill a per-block profile into the palette function whose ratios come closest, without a forward.

The search runs over the function's stages: every pre-process chain of up to one op and PAIRS random
chains of two ops, each with every reduction, give per-block values (computed once per pair, on the first
ROUGH_ROWS rows of each block sample); every transform chain of up to two ops is applied to those; lam
and the direction are then fitted by least squares (the mapping is linear in them: s = target +
2 lam (n - mean n)). The FINALISTS closest before clipping are mapped exactly, on the whole samples, and
the closest by root-mean-square distance wins.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import torch

from engine.allocation.function import AllocationFunction
from engine.allocation.methods import AllocationInputs
from engine.allocation.ops import PRE_OPS, REDUCTIONS, TRANSFORMS
from engine.allocation.samples import BlockSample
from engine.choices import MAX_LAM
from engine.errors import InvalidFunctionError

PAIRS = 40
FINALISTS = 60
ROUGH_ROWS = 128
LAM_DECIMALS = 3


@dataclass(frozen=True)
class Distilled:
    function: str
    ratios: tuple[float, ...]
    rmse: float  # root-mean-square distance of its block ratios to the profile's
    max_error: float
    tried: int  # functions compared


def distill(profile: list[float], inputs: AllocationInputs, target: float, seed: int = 0, pairs: int = PAIRS,
            finalists: int = FINALISTS) -> Distilled:
    """The function whose block ratios at `target` come closest to `profile` (per-block sparsities); fewer
    `pairs` and `finalists` trade closeness for time (a search's start functions)."""
    rng = random.Random(seed)
    pre_ops = [op for op in PRE_OPS if op != "no_op"]
    chains = [()] + [(op,) for op in pre_ops]
    chains += rng.sample(list(itertools.permutations(pre_ops, 2)) + [(op, op) for op in pre_ops],
                         min(pairs, len(pre_ops) ** 2))
    tr_ops = [op for op in TRANSFORMS if op != "no_op"]
    transforms = [()] + [(op,) for op in tr_ops] + list(itertools.product(tr_ops, repeat=2))
    goal = torch.tensor(profile, dtype=torch.float64) - target
    samples = [BlockSample(s.matrix[:ROUGH_ROWS], s.numel) for s in inputs.samples]
    rows = []  # (pre, reduction) and its per-block values
    for pre in chains:
        for reduction in REDUCTIONS:
            try:
                rows.append(((pre, reduction), AllocationFunction(pre, reduction).block_values(samples)))
            except InvalidFunctionError:
                continue
    if not rows:
        raise InvalidFunctionError("no palette function gives finite values on this model's blocks")
    values = torch.stack([v for _, v in rows])
    rough = []
    for t, transform in enumerate(transforms):  # every row at once: the transforms are element-wise
        errors, lams, directions = _fit(values, transform, goal)
        for i in torch.isfinite(errors).nonzero().flatten().tolist():
            rough.append((float(errors[i]), i, t, *rows[i][0], transform, float(lams[i]), int(directions[i])))
    rough.sort(key=lambda r: r[:3])
    best = None
    for _, _, _, pre, reduction, transform, lam, direction in rough[:finalists]:
        function = AllocationFunction(pre, reduction, transform, lam, direction)
        try:
            ratios, _ = function.block_ratios(inputs.samples, inputs.block_params, target)
        except InvalidFunctionError:
            continue
        errors = [r - p for r, p in zip(ratios, profile)]
        rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
        if best is None or rmse < best.rmse:
            best = Distilled(str(function), tuple(ratios), rmse, max(abs(e) for e in errors), len(rough))
    if best is None:
        raise InvalidFunctionError("no palette function gives finite values on this model's blocks")
    return best


def _fit(values: torch.Tensor, transform: tuple[str, ...], goal: torch.Tensor):
    """Per row of `values` (one per candidate, a value per block): the squared error before clipping of the
    least-squares mapping, its lam (rounded to LAM_DECIMALS, within [10^-LAM_DECIMALS, MAX_LAM]) and
    direction; the error is infinite where a value is not finite or all are equal."""
    v = values
    for op in transform:
        v = TRANSFORMS[op](v)
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    usable = torch.isfinite(v).all(1) & (hi > lo).flatten()
    n = (v - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    c = n - n.mean(1, keepdim=True)
    lam = (c * goal).sum(1) / (2 * (c * c).sum(1).clamp_min(1e-300))
    direction = torch.where(lam >= 0, 1, -1)
    scale = 10 ** LAM_DECIMALS
    lam = torch.round(lam.abs().clamp(1 / scale, MAX_LAM) * scale) / scale
    error = ((goal - 2 * (lam * direction)[:, None] * c) ** 2).sum(1)
    return torch.where(usable & torch.isfinite(error), error, torch.inf), lam, direction
