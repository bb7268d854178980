"""The operation palette of DSA allocation functions.

pre-process: element-wise on a block's score sample; reduction: sample -> scalar;
transform: scalar -> scalar, applied to every block's value. All work in float64 and return
whatever the mathematics gives: non-finite results are caught by the caller, which names the op.

Exact zeros (pruned or quantised-away weights; the default model's Q4_1 weights have many) have no
logarithm: `abslog`, `log` and the `geomean` reduction floor them at the sample's smallest non-zero |x|.
The DSA reference code sets them to 1 instead (log 0 -> 0) in its abslog and log (which also adds 1e-6);
`REFERENCE_PRE_OPS` are those two as it computes them, used by functions with `nan=reference`.
"""

from __future__ import annotations

import math

import torch


def _log_abs(x):
    """ln|x|, with exact zeros (pruned or quantised-away weights) floored at the smallest non-zero |x|."""
    a = x.abs()
    nonzero = a[a > 0]
    floor = nonzero.min() if nonzero.numel() else a.new_tensor(0.0)
    return torch.log(torch.maximum(a, floor))


def _log(x):
    """ln x for x >= 0 (zeros floored as in abslog); negative inputs give NaN."""
    return torch.where(x < 0, torch.full_like(x, float("nan")), _log_abs(x))


def _minmax(x):
    return (x - x.min()) / (x.max() - x.min())


def _normalize(x):
    return (x - x.mean()) / x.std(correction=0)


def _reference_abslog(x):
    """The DSA reference's abslog: zeros set to 1, then ln|x|."""
    return torch.log(torch.where(x == 0, torch.ones_like(x), x).abs())


def _reference_log(x):
    """The DSA reference's log: x <= 0 set to 1, then ln(x + 1e-6)."""
    return torch.log(torch.where(x <= 0, torch.ones_like(x), x) + 1e-6)


PRE_OPS = {
    "no_op": lambda x: x,
    "abs": torch.abs,
    "log": _log,
    "abslog": _log_abs,
    "pow2": torch.square,
    "exp": torch.exp,
    "normalize": _normalize,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "minmax": _minmax,
    "softmax": lambda x: torch.softmax(x.flatten(), 0).view_as(x),
}


def _entropy(m, numel):
    p = m.abs().flatten()
    p = p / p.sum()
    return -torch.special.xlogy(p, p).sum() / math.log(p.numel()) if p.numel() > 1 else p.sum() * 0


def _effective_rank(m, numel):
    s = torch.linalg.svdvals(m)
    p = s / s.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


def _gram_correlation(m, numel):
    """Mean absolute correlation between distinct rows of the sample."""
    c = torch.corrcoef(m)
    n = c.shape[0]
    return (c.abs().sum() - c.diagonal().abs().sum()) / (n * (n - 1)) if n > 1 else c.sum() * 0


def _logdet(m, numel):
    """log-determinant of the sample's Gram matrix over its smaller side, scaled by the larger."""
    g = (m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T) / max(m.shape)
    sign, logabs = torch.linalg.slogdet(g)
    return torch.where(sign > 0, logabs, torch.tensor(float("nan"), dtype=g.dtype))


REFERENCE_PRE_OPS = {**PRE_OPS, "abslog": _reference_abslog, "log": _reference_log}

REDUCTIONS = {
    "mean": lambda m, numel: m.mean(),
    "var": lambda m, numel: m.var(correction=0),
    "std": lambda m, numel: m.std(correction=0),
    "l1": lambda m, numel: m.abs().mean(),
    # Frobenius norm of the whole block, estimated from the sample's mean square.
    "l2": lambda m, numel: torch.sqrt(m.square().mean() * numel),
    "geomean": lambda m, numel: torch.exp(_log_abs(m).mean()),  # of |x|, zeros floored as in abslog
    "entropy": _entropy,
    "max": lambda m, numel: m.max(),
    "median": lambda m, numel: m.flatten().median(),
    "erank": _effective_rank,
    "gram": _gram_correlation,
    "logdet": _logdet,
}

TRANSFORMS = {
    "no_op": lambda v: v,
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "exp": torch.exp,
    "log": torch.log,
    "abs": torch.abs,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": torch.nn.functional.softplus,
    "sqrt": torch.sqrt,
    "square": torch.square,
    "reciprocal": torch.reciprocal,
}

STAGES = {"pre": PRE_OPS, "reduction": REDUCTIONS, "transform": TRANSFORMS}
