"""Every allocation method behind one call: compute_allocation(method, target, inputs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable

import torch

from engine.allocation.function import PUBLISHED_DSA, AllocationFunction
from engine.allocation.mapping import check_target, rebalance, scaled_ratios, solve_weighted_mean, spread_ratios
from engine.allocation.profiles import (ATP, PROFILE, TUNED, TUNED_KNOB, block_form_ratios, block_form_text,
                                        is_block_form, parse_block_form)
from engine.allocation.samples import DEFAULT_SAMPLE_SIZE, BlockSample, sample_blocks
from engine.allocation.units import granularity_of, unit_linears, unit_params
from engine.architecture import Block, block_means
from engine.choices import METHOD_ALIASES, METHODS
from engine.errors import WorkbenchError

OWL_M = 5.0
OWL_LAM = 0.08
ALPHA_EPS = 0.2  # AlphaPruning's epsilon for Wanda and SparseGPT in its scripts (0.3 for magnitude)
ALPHA_BINS = 100  # its histogram of log10 eigenvalues, whose peak bounds the cut-off candidates
ER_ENDS_BOOST = 2.0
ALPHA_FIT = "power-law fit, lower cut-off by the smallest Kolmogorov-Smirnov distance near the spectrum's peak"
DLP_ALPHA = 0.15  # DLP's alpha (its scripts' and run.py's default): block sparsities spread about 2 * alpha
DLP_SCORE = "mean Wanda score of the block's linears, dense activations"


@dataclass(frozen=True)
class Allocation:
    method: str  # a baseline name, or the canonical text of a function
    target: float
    linear_ratios: dict[str, float]
    block_ratios: tuple[float, ...]
    block_values: tuple[float, ...] | None = None  # per-block importance, where the method has one
    parameters: dict | None = None  # the method's settings, recorded beside its ratios (AlphaPruning's eps)
    unit_ratios: tuple[float, ...] | None = None  # per group or linear (engine.allocation.units), where finer

    @property
    def candidate_ratios(self) -> tuple[float, ...]:
        """What a search logs and compares: the unit ratios where the allocation is finer than blocks."""
        return self.unit_ratios or self.block_ratios


class AllocationInputs:
    """What allocations read from a model, computed once: element scores, block samples,
    outlier fractions, heavy-tail exponents. `dense(name)` is a linear's dense weight."""

    def __init__(self, blocks: list[Block], dense: Callable[[str], torch.Tensor], scores: Callable[[str], torch.Tensor],
                 *, seed: int = 0, sample_size: int = DEFAULT_SAMPLE_SIZE):
        self.blocks = blocks
        self.dense = dense
        self.scores = scores
        self.seed = seed
        self.sample_size = sample_size
        self.linear_params = {n: lin.weight.numel() for b in blocks for n, lin in b.linears.items()}
        self.block_params = [b.params for b in blocks]

    @cached_property
    def samples(self) -> list[BlockSample]:
        return sample_blocks(self.blocks, self.scores, size=self.sample_size, seed=self.seed)

    @cached_property
    def group_samples(self) -> list[BlockSample]:
        """A sample of each block's attention and of its MLP linears (what `groups` functions read)."""
        groups = [Block(b.index, {n: b.linears[n] for n in unit}, b.module)
                  for b in self.blocks for unit in unit_linears([b], "group")]
        return sample_blocks(groups, self.scores, size=self.sample_size, seed=self.seed)

    def whole_blocks(self):
        """Every block's scores, its linears flattened into one row (float64), one block at a time: what the
        DSA reference code reduces, read by functions under the reference NaN policy (one block's scores in
        float64 in memory at a time)."""
        for b in self.blocks:
            yield BlockSample(torch.cat([self.scores(n).double().flatten() for n in b.linears])[None, :], b.params)

    @cached_property
    def score_statistics(self) -> tuple[list[float], list[float]]:
        """Per block, in one pass: the mean score, and (OWL) the fraction of scores above OWL_M times it."""
        means, outliers = [], []
        for b in self.blocks:
            total = sum(self.scores(n).sum().item() for n in b.linears)
            means.append(total / b.params)
            threshold = OWL_M * total / b.params
            outliers.append(sum((self.scores(n) > threshold).sum().item() for n in b.linears) / b.params)
        return means, outliers

    @property
    def mean_scores(self) -> list[float]:
        return self.score_statistics[0]

    @property
    def outlier_fractions(self) -> list[float]:
        return self.score_statistics[1]

    @cached_property
    def alphas(self) -> list[float]:
        """AlphaPruning: per block, the mean power-law exponent of its matrices' W^T W spectra."""
        return [sum(esd_alpha(self.dense(n)) for n in b.linears) / len(b.linears) for b in self.blocks]


def esd_alpha(weight: torch.Tensor, chunk: int = 256) -> float:
    """The power-law exponent of the eigenvalues of W^T W as AlphaPruning's reference fits it (its default,
    "xmin_peak"): for every candidate lower cut-off x_i (eigenvalues ascending), alpha_i = 1 + n_i /
    sum_{j>=i} ln(x_j / x_i) over the n_i eigenvalues from x_i up, and the cut-off kept is the one whose
    fitted distribution is nearest the data in Kolmogorov-Smirnov distance. Candidates lie between the
    reference's two bounds around the peak p of a 100-bin histogram of log10 eigenvalues: from log10(0.95 p)
    (the reference compares eigenvalues with that logarithm, which in practice admits every small
    eigenvalue; kept so the alphas match it) up to 1.5 p."""
    eigs = torch.linalg.svdvals(weight.detach().float()).cpu().double().square().sort().values
    n_eigs = eigs.numel()
    if n_eigs < 2:
        raise WorkbenchError("AlphaPruning needs matrices with at least two singular values")
    logs = eigs.log()
    log10 = logs / math.log(10)
    counts = torch.histc(log10, ALPHA_BINS, min=float(log10.min()), max=float(log10.max()))
    edges = torch.linspace(float(log10.min()), float(log10.max()), ALPHA_BINS + 1, dtype=torch.float64)
    peak = 10 ** float(edges[int(counts.argmax())])
    lower, upper = math.log10(0.95 * peak), 1.5 * peak
    candidates = ((eigs[:-1] >= lower) & (eigs[:-1] <= upper)).nonzero().flatten()
    if not len(candidates):
        return 0.0  # the reference's value when no cut-off is tried
    suffix = logs.flip(0).cumsum(0).flip(0)  # sum of logs from i up
    best_d, best_alpha = 1.0, 0.0  # the reference's D for cut-offs not tried, and its alpha there
    positions = torch.arange(n_eigs, dtype=torch.float64)
    for start in range(0, len(candidates), chunk):
        idx = candidates[start:start + chunk]
        n = (n_eigs - idx).double()
        alpha = 1 + n / (suffix[idx] - n * logs[idx])
        # KS distance over j >= i: |1 - (x_j / x_i)^(1 - alpha) - (j - i) / n|
        ratio = eigs[None, :] / eigs[idx, None]
        offset = positions[None, :] - idx[:, None].double()
        gap = (1 - ratio.pow(1 - alpha[:, None]) - offset / n[:, None]).abs()
        d = gap.masked_fill(offset < 0, 0).amax(1).masked_fill(~(alpha > 1), 1.0)
        k = int(d.argmin())
        if float(d[k]) < best_d:
            best_d, best_alpha = float(d[k]), float(alpha[k])
    return best_alpha


def canonical_method(method: str) -> str:
    """A method name (aliases resolved), or the canonical text of a profile, a protect level or a function;
    raises on an invalid one."""
    method = METHOD_ALIASES.get(method, method)
    if method in METHODS:
        return method
    if is_block_form(method):
        return block_form_text(*parse_block_form(method))
    return str(AllocationFunction.parse(method))


def with_nan_policy(method: str, policy: str) -> str:
    """The canonical text of `method` under a NaN policy (engine.allocation.function): a function (or `dsa`,
    the published one) takes it; the other methods have no function values to replace and stay as they are."""
    method = canonical_method(method)
    if policy == "reject" or method in METHODS and method != "dsa" or is_block_form(method):
        return method
    function = PUBLISHED_DSA if method == "dsa" else AllocationFunction.parse(method)
    return str(function.with_nan_policy(policy))


def compute_allocation(method: str, target: float, inputs: AllocationInputs) -> Allocation:
    """Per-linear ratios for `method`: a name in METHODS (but the protect baselines, which the session
    resolves to a level), a profile or protect text (engine.allocation.profiles) or a function's text."""
    target = check_target(target)
    method = METHOD_ALIASES.get(method, method)
    if is_block_form(method):
        kind, values = parse_block_form(method)
        if kind == PROFILE and len(values) != len(inputs.blocks):  # a profile of groups or linears
            granularity = granularity_of(len(values), len(inputs.blocks))
            ratios = rebalance(list(values), unit_params(inputs.blocks, granularity), target)
            return _from_units(canonical_method(method), target, inputs, granularity, ratios)
        parameters = {TUNED_KNOB[kind]: values[0]} if kind in TUNED else None
        ratios = block_form_ratios(method, inputs.block_params, target)
        return _from_blocks(canonical_method(method), target, inputs, ratios, parameters=parameters)
    if method in TUNED:
        raise WorkbenchError(f"'{method}' picks its value on the fitness split: allocate it through a session, "
                             f"or give the value ('{method}:{0.004 if method == ATP else 0.3}')")
    if method in NAMED:
        return NAMED[method](method, target, inputs)
    function = PUBLISHED_DSA if method == "dsa" else AllocationFunction.parse(method)
    if function.groups:
        values = function.block_values(inputs.group_samples)
        ratios = spread_ratios(values.tolist(), unit_params(inputs.blocks, "group"), target, function.lam,
                               function.direction)
        return _from_units(str(function), target, inputs, "group", ratios)
    reference = function.nan == "reference"  # as the reference code: whole blocks, non-finite values replaced
    values, replaced = function.values_and_replaced(inputs.whole_blocks() if reference else inputs.samples)
    ratios = spread_ratios(values.tolist(), inputs.block_params, target, function.lam, function.direction)
    return _from_blocks(str(function), target, inputs, ratios, values.tolist(),
                        {"replaced_blocks": replaced} if reference else None)


def _uniform(method, target, inputs) -> Allocation:
    return _from_blocks(method, target, inputs, [target] * len(inputs.blocks))


def _owl(method, target, inputs) -> Allocation:
    """OWL: the blocks with more outliers pruned less."""
    values = inputs.outlier_fractions
    return _from_blocks(method, target, inputs, spread_ratios(values, inputs.block_params, target, OWL_LAM, -1), values)


def _dlp(method, target, inputs) -> Allocation:
    """DLP (Chen et al., ICML 2025): the blocks with the higher mean score pruned more."""
    values = inputs.mean_scores
    ratios = spread_ratios(values, inputs.block_params, target, DLP_ALPHA, +1)
    return _from_blocks(method, target, inputs, ratios, values, {"alpha": DLP_ALPHA, "score": DLP_SCORE})


def _alpha(method, target, inputs) -> Allocation:
    """AlphaPruning: the blocks with heavier-tailed spectra (smaller alpha) pruned less."""
    values = inputs.alphas
    ratios = scaled_ratios(values, inputs.block_params, target, ALPHA_EPS)
    return _from_blocks(method, target, inputs, ratios, values, {"eps": ALPHA_EPS, "fit": ALPHA_FIT})


def _global(method, target, inputs) -> Allocation:
    return _from_linears(method, target, inputs, _global_ratios(target, inputs))


def _er(method, target, inputs) -> Allocation:
    return _from_linears(method, target, inputs, _er_ratios(target, inputs, ends=method == "er-ends"))


# The baselines computed from the inputs alone, by name (the tuned ones, ATP and protect-first/-ends, are block
# forms with their value: engine.allocation.profiles): name -> (name, target, inputs) -> Allocation.
NAMED = {"uniform": _uniform, "owl": _owl, "dlp": _dlp, "alpha": _alpha, "global": _global, "er": _er, "er-plus": _er,
         "er-ends": _er}


def _from_blocks(method, target, inputs, block_ratios, values=None, parameters=None) -> Allocation:
    linear = {n: r for b, r in zip(inputs.blocks, block_ratios) for n in b.linears}
    return Allocation(method, target, linear, tuple(block_ratios), tuple(values) if values is not None else None,
                      parameters)


def _from_units(method, target, inputs, granularity: str, unit_ratios: list[float]) -> Allocation:
    """One ratio per unit (engine.allocation.units) given to each of its linears."""
    units = unit_linears(inputs.blocks, granularity)
    linear = {n: r for unit, r in zip(units, unit_ratios) for n in unit}
    return replace(_from_linears(method, target, inputs, linear), unit_ratios=tuple(unit_ratios))


def _from_linears(method, target, inputs, linear_ratios: dict[str, float]) -> Allocation:
    return Allocation(method, target, linear_ratios, tuple(block_means(inputs.blocks, linear_ratios)))


def _global_ratios(target, inputs) -> dict[str, float]:
    """One score threshold over all blocks (estimated from the block samples), then each linear's
    fraction below it, shifted to hit the target exactly."""
    values, weights = [], []
    for sample in inputs.samples:
        flat = sample.matrix.flatten()
        values.append(flat)
        weights.append(torch.full_like(flat, sample.numel / flat.numel()))
    values, weights = torch.cat(values), torch.cat(weights)
    order = values.argsort()
    cum = weights[order].cumsum(0)
    idx = int(torch.searchsorted(cum, target * cum[-1]).clamp(max=len(order) - 1))
    threshold = values[order[idx]].item()
    names = list(inputs.linear_params)
    raw = [(inputs.scores(n) < threshold).float().mean().item() for n in names]
    return dict(zip(names, rebalance(raw, [inputs.linear_params[n] for n in names], target)))


def _er_ratios(target, inputs, ends: bool) -> dict[str, float]:
    """Erdos-Renyi: density proportional to (n_in + n_out) / (n_in * n_out), scaled to the target.

    ER-plus (random-pruning literature) is ER with the final classifier kept dense and the rest spread by ER
    so the total holds. Here no method prunes the classifier (lm_head) or the embeddings, and the target
    counts the decoder blocks' linears only, so ER-plus allocates exactly as ER. `ends` (er-ends, our own
    variant) multiplies the density of the first and last blocks by ER_ENDS_BOOST."""
    last = len(inputs.blocks) - 1
    names, weights, density = [], [], []
    for b in inputs.blocks:
        boost = ER_ENDS_BOOST if ends and b.index in (0, last) else 1.0
        for n, lin in b.linears.items():
            names.append(n)
            weights.append(inputs.linear_params[n])
            density.append(boost * (lin.in_features + lin.out_features) / (lin.in_features * lin.out_features))
    if not all(d > 0 for d in density):
        raise WorkbenchError("ER allocation needs non-empty linears")
    # sparsity = 1 - c * density grows as c shrinks: solve over u = -c, increasing.
    scale = 1.0 / min(density)
    ratios = solve_weighted_mean(lambda u: [1.0 + u * d for d in density], weights, target, -scale, 0.0)
    return dict(zip(names, ratios))
