"""Per-block levels of a structurally pruned model: the search genome, its text form and mutations.

Attention level l removes l query heads of the block (0 .. heads); MLP level l removes l/L of its
neurons (0 .. L). A structure is one attention level and one MLP level per block.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.errors import WorkbenchError

KINDS = ("attn", "mlp")


@dataclass(frozen=True)
class Shapes:
    """What the levels are cut from: the dense model's per-block sizes."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    mlp_levels: int = 10

    @classmethod
    def of(cls, config, mlp_levels: int = 10) -> Shapes:
        if getattr(config, "model_type", None) != "llama":
            raise WorkbenchError(f"structured pruning supports Llama models only (this one is "
                                 f"{getattr(config, 'model_type', 'unknown')})")
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise WorkbenchError("structured pruning does not support Llama models with linear biases")
        if not 1 <= mlp_levels <= 100:
            raise WorkbenchError(f"MLP levels must be between 1 and 100 (got {mlp_levels})")
        heads = config.num_attention_heads
        return cls(layers=config.num_hidden_layers, hidden=config.hidden_size, heads=heads,
                   kv_heads=config.num_key_value_heads or heads,
                   head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                   intermediate=config.intermediate_size, mlp_levels=mlp_levels)

    def max_level(self, kind: str) -> int:
        return self.heads if kind == "attn" else self.mlp_levels

    def kept_neurons(self, level: int) -> int:
        return round(self.intermediate * (1 - level / self.mlp_levels))

    @property
    def attn_params(self) -> int:
        """Dense attention parameters of one block (q, k, v, o)."""
        return 2 * self.hidden * self.head_dim * (self.heads + self.kv_heads)

    @property
    def mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate

    @property
    def decoder_params(self) -> int:
        """Linear parameters of all blocks (norms, embeddings and head are never pruned)."""
        return self.layers * (self.attn_params + self.mlp_params)


@dataclass(frozen=True)
class Structure:
    attn: tuple[int, ...]
    mlp: tuple[int, ...]

    def levels(self, kind: str) -> tuple[int, ...]:
        return self.attn if kind == "attn" else self.mlp

    def __str__(self) -> str:
        return f"attn {' '.join(map(str, self.attn))} / mlp {' '.join(map(str, self.mlp))}"

    @classmethod
    def parse(cls, text: str, shapes: Shapes) -> Structure:
        try:
            attn_part, mlp_part = text.split("/")
            attn = tuple(int(x) for x in attn_part.split()[1:])
            mlp = tuple(int(x) for x in mlp_part.split()[1:])
            if attn_part.split()[0] != "attn" or mlp_part.split()[0] != "mlp":
                raise ValueError
        except (ValueError, IndexError) as exc:
            raise WorkbenchError(f"not a structure: {text!r} (expected 'attn L L ... / mlp L L ...')") from exc
        structure = cls(attn, mlp)
        structure.check(shapes)
        return structure

    def check(self, shapes: Shapes) -> None:
        for kind in KINDS:
            levels = self.levels(kind)
            if len(levels) != shapes.layers:
                raise WorkbenchError(f"structure has {len(levels)} {kind} levels for {shapes.layers} blocks")
            if any(not 0 <= level <= shapes.max_level(kind) for level in levels):
                raise WorkbenchError(f"{kind} levels must lie in 0..{shapes.max_level(kind)}")


def uniform(shapes: Shapes, keep: float) -> Structure:
    """Levels as equal as the grid allows for keeping about `keep` of each module kind."""
    if not 0 < keep < 1:
        raise WorkbenchError(f"the parameter target must lie in (0, 1): the fraction of decoder parameters "
                             f"kept (got {keep})")

    def spread(max_level: int) -> tuple[int, ...]:
        total = round(shapes.layers * max_level * (1 - keep))
        base, extra = divmod(total, shapes.layers)
        # `extra` blocks get one level more, spread evenly over the depth
        return tuple(base + ((i + 1) * extra // shapes.layers - i * extra // shapes.layers)
                     for i in range(shapes.layers))

    return Structure(spread(shapes.heads), spread(shapes.mlp_levels))


def mutate(structure: Structure, shapes: Shapes, rng: random.Random, max_moves: int = 3) -> Structure:
    """1..max_moves level switches: one module of a kind one level up, another of the same kind one
    level down, so the sum of levels of each kind (its budget) is unchanged."""
    levels = {kind: list(structure.levels(kind)) for kind in KINDS}
    for _ in range(rng.randint(1, max_moves)):
        kind = rng.choice(KINDS)
        current = levels[kind]
        ups = [i for i, level in enumerate(current) if level < shapes.max_level(kind)]
        downs = [i for i, level in enumerate(current) if level > 0]
        pairs = [(u, d) for u in ups for d in downs if u != d]
        if not pairs:
            continue
        up, down = rng.choice(pairs)
        current[up] += 1
        current[down] -= 1
    return Structure(tuple(levels["attn"]), tuple(levels["mlp"]))
