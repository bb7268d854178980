"""Block-sequential pruning (`--calibration sequential`), as the reference Wanda and SparseGPT code prune.

Each block's statistics come from the output of the blocks before it, already pruned; the block is
pruned, then run again to give the next block its input. Only one block's statistics (for SparseGPT,
its Hessians: about 1 GiB for an 8B Llama block) are held at a time, next to every calibration window's
hidden state. The weights change in place.
"""

from __future__ import annotations

import torch

from engine.architecture import Block
from engine.blocks import BlockRunner
from engine.calibration import StatsCollector
from engine.metrics import NMPattern, is_magnitude
from engine.progress import Progress, no_progress
from engine.pruning import Pruner, check_ratios


@torch.no_grad()
def prune_sequentially(model, blocks: list[Block], windows: torch.Tensor, ratios: dict[str, float], metric: str,
                       pattern: NMPattern | None = None, batch_size: int = 4,
                       progress: Progress = no_progress) -> None:
    check_ratios({n: None for b in blocks for n in b.linears}, ratios)
    runner = BlockRunner(model, blocks, windows, batch_size)
    runner.start()
    for i, block in enumerate(blocks):
        stats = None
        if not is_magnitude(metric):
            collector = StatsCollector([block], hessians=metric == "sparsegpt")
            try:
                runner.run(i, advance=False)
            finally:
                stats = collector.close(windows.numel())
        Pruner([block], metric, stats, pattern).prune_in_place({n: ratios[n] for n in block.linears})
        del stats
        runner.run(i)  # the pruned block's output feeds the next one
        progress("sequential pruning", i + 1, len(blocks))
