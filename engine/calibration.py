"""Calibration statistics: what the metrics need to know about each linear's inputs.

`calibrate` runs the dense model once over the calibration windows with hooks on every block (the
search's shared caches); `StatsCollector` is the same hooks on any set of blocks, which the
block-sequential pass (engine.sequential) uses one block at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.architecture import INPUT_GROUP, Block, linear_path
from engine.evaluation import input_device
from engine.progress import Progress, no_progress


@dataclass
class CalibrationStats:
    """Per linear: sum over calibration tokens of x_j^2 (Wanda) and optionally H = 2/n X^T X (SparseGPT).

    Linears that read the same input share one tensor."""

    tokens: int
    sq_sums: dict[str, torch.Tensor]
    hessians: dict[str, torch.Tensor] | None

    def feature_norm(self, name: str) -> torch.Tensor:
        return self.sq_sums[name].sqrt()

    def nbytes(self) -> int:
        tensors = {id(t): t for t in self.sq_sums.values()}
        tensors.update({id(t): t for t in (self.hessians or {}).values()})
        return sum(t.numel() * t.element_size() for t in tensors.values())


class StatsCollector:
    """Forward hooks on the linears of `blocks` that sum the statistics of their inputs; each input group
    (q/k/v, gate/up) is summed once, on its linear's device."""

    def __init__(self, blocks: list[Block], hessians: bool):
        self.sq: dict[str, torch.Tensor] = {}
        self.hs: dict[str, torch.Tensor] | None = {} if hessians else None
        self.tokens = 0
        self._handles = []
        for block in blocks:
            prefix = f"model.layers.{block.index}."
            for name, linear in block.linears.items():
                if INPUT_GROUP[linear_path(name)] != linear_path(name):
                    continue
                device, n_in = linear.weight.device, linear.in_features
                self.sq[name] = torch.zeros(n_in, dtype=torch.float32, device=device)
                if self.hs is not None:
                    self.hs[name] = torch.zeros(n_in, n_in, dtype=torch.float32, device=device)
                self._handles.append(linear.register_forward_pre_hook(self._hook(name)))
            for name in block.linears:
                leader = prefix + INPUT_GROUP[linear_path(name)]
                self.sq[name] = self.sq[leader]
                if self.hs is not None:
                    self.hs[name] = self.hs[leader]

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            self.sq[name].add_((x * x).sum(0))
            if self.hs is not None:
                self.hs[name].addmm_(x.T, x)
        return hook

    def close(self, tokens: int) -> CalibrationStats:
        """Remove the hooks; the statistics of `tokens` calibration tokens."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.hs is not None:
            for name, h in self.hs.items():
                if INPUT_GROUP[linear_path(name)] == linear_path(name):
                    h.mul_(2.0 / tokens)
        return CalibrationStats(tokens, self.sq, self.hs)


@torch.no_grad()
def calibrate(model, blocks: list[Block], windows: torch.Tensor, *, hessians: bool = False,
              batch_size: int = 4, progress: Progress = no_progress) -> CalibrationStats:
    """Run `windows` ([n, seqlen] token ids) through the dense model with hooks on every block.
    `progress("calibration", tokens done, tokens in all)` after every block of every batch (a batch's tokens
    counted in proportion to the blocks it has passed), so a callback that raises ends it within one block."""
    collector = StatsCollector(blocks, hessians)
    total, done, batch_tokens = windows.numel(), 0, 0

    def passed(k: int):
        def hook(module, args, output):
            progress("calibration", done + batch_tokens * (k + 1) // len(blocks), total)
        return hook

    handles = [block.module.register_forward_hook(passed(k)) for k, block in enumerate(blocks)]
    try:
        for batch in windows.split(batch_size):
            batch_tokens = batch.numel()
            model.model(input_ids=batch.to(input_device(model)), use_cache=False)
            done += batch_tokens
    finally:
        for handle in handles:
            handle.remove()
        stats = collector.close(max(done, 1))
    return stats
