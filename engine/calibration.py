"""One pass of calibration text through the dense model, collecting what the metrics need."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.architecture import INPUT_GROUP, Block, linear_path
from engine.progress import Progress, no_progress


@dataclass
class CalibrationStats:
    """Per linear: sum over calibration tokens of x_j^2 (Wanda) and optionally H = 2/n X^T X (SparseGPT).

    Linears that read the same input share one tensor.
    """

    tokens: int
    sq_sums: dict[str, torch.Tensor]
    hessians: dict[str, torch.Tensor] | None

    def feature_norm(self, name: str) -> torch.Tensor:
        return self.sq_sums[name].sqrt()

    def nbytes(self) -> int:
        tensors = {id(t): t for t in self.sq_sums.values()}
        tensors.update({id(t): t for t in (self.hessians or {}).values()})
        return sum(t.numel() * t.element_size() for t in tensors.values())


@torch.no_grad()
def calibrate(model, blocks: list[Block], windows: torch.Tensor, *, hessians: bool = False,
              batch_size: int = 4, progress: Progress = no_progress) -> CalibrationStats:
    """Run `windows` ([n, seqlen] token ids) through the dense model with hooks on each input group.
    `progress("calibration", tokens done, tokens in all)` after every batch."""
    device = next(model.parameters()).device
    sq: dict[str, torch.Tensor] = {}
    hs: dict[str, torch.Tensor] = {}
    handles = []
    for block in blocks:
        prefix = f"model.layers.{block.index}."
        for name, linear in block.linears.items():
            if INPUT_GROUP[linear_path(name)] != linear_path(name):
                continue
            n_in = linear.in_features
            sq[name] = torch.zeros(n_in, dtype=torch.float32, device=device)
            if hessians:
                hs[name] = torch.zeros(n_in, n_in, dtype=torch.float32, device=device)
            handles.append(linear.register_forward_pre_hook(_hook(name, sq, hs if hessians else None)))
        for name in block.linears:
            leader = prefix + INPUT_GROUP[linear_path(name)]
            sq[name] = sq[leader]
            if hessians:
                hs[name] = hs[leader]
    n_tokens = 0
    try:
        for batch in windows.split(batch_size):
            model(batch.to(device), use_cache=False)
            n_tokens += batch.numel()
            progress("calibration", n_tokens, windows.numel())
    finally:
        for h in handles:
            h.remove()
    if hessians:
        for name, h in hs.items():
            if INPUT_GROUP[linear_path(name)] == linear_path(name):
                h.mul_(2.0 / n_tokens)
    return CalibrationStats(n_tokens, sq, hs if hessians else None)


def _hook(name, sq, hs):
    def hook(module, args):
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        sq[name].add_((x * x).sum(0))
        if hs is not None:
            hs[name].addmm_(x.T, x)
    return hook
