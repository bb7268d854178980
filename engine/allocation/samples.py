"""Fixed per-block samples of element-wise scores: the inputs of allocation functions.

A block's seven linears hold millions of scores (hundreds of millions for 7B models); functions
are evaluated on a sample drawn once: rows of every linear in proportion to its size, each row
cut to the same random column positions, so reductions that need a matrix (rank, Gram, logdet)
have one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from engine.architecture import Block
from engine.data_config import DEFAULT_SAMPLE_SIZE
MAX_COLUMNS = 256


@dataclass(frozen=True)
class BlockSample:
    matrix: torch.Tensor  # float64 [rows, cols], on the CPU
    numel: int  # scores in the whole block


def sample_blocks(blocks: list[Block], scores: Callable[[str], torch.Tensor], *, size: int = DEFAULT_SAMPLE_SIZE,
                  seed: int = 0) -> list[BlockSample]:
    return [_sample_block(b, scores, size, seed) for b in blocks]


def _sample_block(block: Block, scores, size: int, seed: int) -> BlockSample:
    gen = torch.Generator().manual_seed(seed * 100003 + block.index)
    cols = min(MAX_COLUMNS, min(lin.in_features for lin in block.linears.values()))
    total = block.params
    parts = []
    for name, lin in block.linears.items():
        s = scores(name)
        n_rows = min(lin.out_features, max(1, math.ceil(size * lin.weight.numel() / total / cols)))
        rows = torch.randperm(lin.out_features, generator=gen)[:n_rows]
        columns = torch.randperm(lin.in_features, generator=gen)[:cols]
        parts.append(s[rows.to(s.device)][:, columns.to(s.device)].double().cpu())
    return BlockSample(torch.cat(parts), total)
