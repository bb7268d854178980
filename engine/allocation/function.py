"""DSA allocation functions: pre-process* | reduction | transform* | mapping, with a text form.

Text form: `abslog | var | atan, asin` with optional `| lam=0.12` and `| dir=-` (defaults lam=0.08,
dir=+, omitted when printing). An empty stage is written `no_op`. The reference code's form
`W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)` is read too; its last group (the code's post-process id) is
accepted and our one linear mapping is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from engine.allocation.mapping import spread_ratios
from engine.allocation.ops import PRE_OPS, REDUCTIONS, TRANSFORMS
from engine.allocation.samples import BlockSample
from engine.choices import DEFAULT_LAM, MAX_LAM
from engine.errors import InvalidFunctionError

_LEGACY = re.compile(r"^\s*\w+\s*:\s*\(([^)]*)\)\s*-\s*\(([^)]*)\)\s*-\s*\(([^)]*)\)\s*(?:-\s*\((\s*\d*\s*)\))?\s*$")


@dataclass(frozen=True)
class AllocationFunction:
    pre: tuple[str, ...] = ()
    reduction: str = "mean"
    transform: tuple[str, ...] = ()
    lam: float = DEFAULT_LAM
    direction: int = 1  # +1: a higher value gives a higher sparsity (as in the DSA code)

    def __post_init__(self):
        object.__setattr__(self, "pre", tuple(op for op in self.pre if op != "no_op"))
        object.__setattr__(self, "transform", tuple(op for op in self.transform if op != "no_op"))
        for op in self.pre:
            _check_op(op, PRE_OPS, "pre-process")
        _check_op(self.reduction, REDUCTIONS, "reduction")
        for op in self.transform:
            _check_op(op, TRANSFORMS, "transform")
        if not (isinstance(self.lam, (int, float)) and 0 < self.lam <= MAX_LAM):
            raise InvalidFunctionError(f"lam must be in (0, {MAX_LAM}] (got {self.lam})", op="lam")
        if self.direction not in (1, -1):
            raise InvalidFunctionError(f"direction must be + or - (got {self.direction})", op="dir")

    def __str__(self) -> str:
        parts = [", ".join(self.pre) or "no_op", self.reduction, ", ".join(self.transform) or "no_op"]
        if self.lam != DEFAULT_LAM:
            parts.append(f"lam={float(self.lam)!r}")
        if self.direction < 0:
            parts.append("dir=-")
        return " | ".join(parts)

    @classmethod
    def parse(cls, text: str) -> AllocationFunction:
        if not isinstance(text, str) or not text.strip():
            raise InvalidFunctionError("empty allocation function")
        legacy = _LEGACY.match(text)
        if legacy:
            pre, red, tr = (g.lower() for g in legacy.groups()[:3])
            return cls(_ops(pre), red.strip(), _ops(tr))
        parts = [p.strip() for p in text.split("|")]
        if len(parts) < 3:
            raise InvalidFunctionError(
                f"'{text}': expected 'pre-process | reduction | transform [| lam=X] [| dir=+/-]'")
        reduction = parts[1]
        if "," in reduction:
            raise InvalidFunctionError(f"'{reduction}': exactly one reduction op is allowed", op=reduction)
        options = {}
        for opt in parts[3:]:
            key, sep, value = (s.strip() for s in opt.partition("="))
            if not sep or key not in ("lam", "dir") or key in options:
                raise InvalidFunctionError(f"'{opt}': expected lam=<number> or dir=+/- once each", op=key or opt)
            options[key] = value
        lam = DEFAULT_LAM
        if "lam" in options:
            try:
                lam = float(options["lam"])
            except ValueError:
                raise InvalidFunctionError(f"lam={options['lam']}: not a number", op="lam") from None
            if not math.isfinite(lam):
                raise InvalidFunctionError(f"lam={options['lam']}: not finite", op="lam")
        direction = {"+": 1, "-": -1, None: 1}.get(options.get("dir"))
        if direction is None:
            raise InvalidFunctionError(f"dir={options['dir']}: use + or -", op="dir")
        return cls(_ops(parts[0]), reduction, _ops(parts[2]), lam, direction)

    def block_values(self, samples: list[BlockSample]) -> torch.Tensor:
        """The function's scalar for every block (float64), or InvalidFunctionError naming the op."""
        values = []
        for i, sample in enumerate(samples):
            x = sample.matrix
            for op in self.pre:
                x = _checked(op, PRE_OPS[op](x), i)
            values.append(_checked(self.reduction, REDUCTIONS[self.reduction](x, sample.numel), i))
        v = torch.stack(values)
        for op in self.transform:
            v = _checked(op, TRANSFORMS[op](v), None)
        return v

    def block_ratios(self, samples: list[BlockSample], weights: list[int], target: float) -> tuple[list[float], list[float]]:
        """Per-block sparsity ratios whose `weights`-weighted mean is `target`, and the block values."""
        values = self.block_values(samples)
        return spread_ratios(values.tolist(), weights, target, self.lam, self.direction), values.tolist()


def _ops(stage: str) -> tuple[str, ...]:
    return tuple(op.strip() for op in stage.split(",") if op.strip())


def _check_op(op: str, table: dict, stage: str) -> None:
    if op not in table:
        raise InvalidFunctionError(f"unknown {stage} op '{op}' (known: {', '.join(table)})", op=op)


def _checked(op: str, out: torch.Tensor, block: int | None) -> torch.Tensor:
    bad = ~torch.isfinite(out)
    if bool(bad.any()):
        kind = "NaN" if bool(torch.isnan(out).any()) else "inf"
        where = f" at block {block}" if block is not None else f" at block {int(bad.flatten().nonzero()[0])}"
        raise InvalidFunctionError(f"op '{op}' produced {kind}{where}", op=op)
    return out


PUBLISHED_DSA = AllocationFunction(("abslog",), "var", ("atan", "asin"))
