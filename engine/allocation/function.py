"""DSA allocation functions: pre-process* | reduction | transform* | mapping, with a text form.

Text form: `abslog | var | atan, asin` with optional `| lam=0.12`, `| dir=-`, `| nan=reference` and `| groups`
(defaults lam=0.08, dir=+, nan=reject, per block; omitted when printing). An empty stage is written `no_op`.

`groups`: the function reads each block's attention linears (q, k, v, o) and MLP linears (gate, up, down) as
two units, computes a value for each, and maps all of them at once, so the attention and MLP of one block can
get different sparsities (engine.allocation.units).

The reference code's form `W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)` is read too (ops in any case). Its optional last group is an
integer the reference parses into a LAMBDA attribute that its allocation never reads (it maps with its
--Lamda option, 0.08 by default): it is accepted when it is an integer and ignored; lam stays 0.08.

NaN policy: by default (`reject`) a function whose value is NaN or infinite for any block is invalid, and
the error names the op and the block. `nan=reference` reproduces the DSA reference code instead: a block
value that is NaN becomes 0 and one that is infinite becomes -1 (after the transforms), abslog / log set
exact zeros to 1 as it does (ops.REFERENCE_PRE_OPS), and the function reads each whole block's scores
flattened into one row, not our fixed sample (engine.allocation.methods). The text keeps `nan=reference`, so
every table, recipe and pane that shows the function shows the policy too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import torch

from engine.allocation.mapping import spread_ratios
from engine.allocation.ops import PRE_OPS, REDUCTIONS, REFERENCE_PRE_OPS, TRANSFORMS
from engine.allocation.samples import BlockSample
from engine.choices import DEFAULT_LAM, MAX_LAM, NAN_POLICIES, PUBLISHED_DSA_TEXT
from engine.errors import InvalidFunctionError

_LEGACY = re.compile(r"^\s*W\s*:\s*\(([^)]*)\)\s*-\s*\(([^)]*)\)\s*-\s*\(([^)]*)\)\s*(?:-\s*\((\s*\d+\s*)\))?\s*$")


@dataclass(frozen=True)
class AllocationFunction:
    pre: tuple[str, ...] = ()
    reduction: str = "mean"
    transform: tuple[str, ...] = ()
    lam: float = DEFAULT_LAM
    direction: int = 1  # +1: a higher value gives a higher sparsity (as in the DSA code)
    nan: str = "reject"  # or "reference": non-finite block values replaced as the DSA reference code does
    groups: bool = False  # one value per attention and per MLP group, not per block

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
        if self.nan not in NAN_POLICIES:
            raise InvalidFunctionError(f"nan={self.nan}: use {' or '.join(NAN_POLICIES)}", op="nan")
        if self.groups and self.nan == "reference":
            raise InvalidFunctionError("nan=reference reads whole blocks, as the reference code: it has no groups",
                                       op="groups")

    def __str__(self) -> str:
        parts = [", ".join(self.pre) or "no_op", self.reduction, ", ".join(self.transform) or "no_op"]
        if self.lam != DEFAULT_LAM:
            parts.append(f"lam={float(self.lam)!r}")
        if self.direction < 0:
            parts.append("dir=-")
        if self.nan != "reject":
            parts.append(f"nan={self.nan}")
        if self.groups:
            parts.append("groups")
        return " | ".join(parts)

    def with_nan_policy(self, policy: str) -> AllocationFunction:
        return replace(self, nan=policy)

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
            if key == "groups" and not sep and key not in options or sep and key in ("lam", "dir", "nan") \
                    and key not in options:
                options[key] = value
                continue
            raise InvalidFunctionError(f"'{opt}': expected lam=<number>, dir=+/-, nan=reject/reference or groups, "
                                       f"once each", op=key or opt)
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
        return cls(_ops(parts[0]), reduction, _ops(parts[2]), lam, direction, options.get("nan", "reject"),
                   "groups" in options)

    def block_values(self, samples: list[BlockSample]) -> torch.Tensor:
        """The function's scalar for every block (float64): under `reject`, InvalidFunctionError naming the op
        and block where a value stops being finite; under `reference`, NaN -> 0 and inf -> -1 at the end."""
        return self.values_and_replaced(samples)[0]

    def replaced_blocks(self, samples: list[BlockSample]) -> list[int]:
        """The blocks whose value the reference policy replaces (NaN or infinite before the replacement)."""
        return self.with_nan_policy("reference").values_and_replaced(samples)[1]

    def values_and_replaced(self, samples) -> tuple[torch.Tensor, list[int]]:
        """`block_values`, and the blocks whose value the reference policy replaced (none under `reject`), from
        one pass over `samples` (any iterable of block samples)."""
        v = self._values(samples)
        if self.nan != "reference":
            return v, []
        replaced = (~v.isfinite()).nonzero().flatten().tolist()
        return torch.where(v.isnan(), 0.0, torch.where(v.isinf(), -1.0, v)), replaced

    def _values(self, samples: list[BlockSample]) -> torch.Tensor:
        reference = self.nan == "reference"
        check = (lambda op, out, block: out) if reference else _checked  # noqa: E731
        pre_ops = REFERENCE_PRE_OPS if reference else PRE_OPS
        values = []
        for i, sample in enumerate(samples):
            x = sample.matrix
            for op in self.pre:
                x = check(op, pre_ops[op](x), i)
            values.append(check(self.reduction, REDUCTIONS[self.reduction](x, sample.numel), i))
        v = torch.stack(values)
        for op in self.transform:
            v = check(op, TRANSFORMS[op](v), None)
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


PUBLISHED_DSA = AllocationFunction.parse(PUBLISHED_DSA_TEXT)
