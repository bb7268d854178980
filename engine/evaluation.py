"""Perplexity on token windows, and KL divergence to the dense model's cached predictions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.progress import Progress, no_progress


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, *, batch_size: int = 4, progress: Progress = no_progress,
               stage: str = "perplexity") -> float:
    """exp of the mean next-token cross entropy over all windows ([n, seqlen] token ids)."""
    device = _device(model)
    total, count = 0.0, 0
    batches = windows.split(batch_size)
    for i, batch in enumerate(batches):
        batch = batch.to(device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += batch[:, 1:].numel()
        progress(stage, i + 1, len(batches))
    nll = total / count
    return math.exp(nll) if nll < 700 else float("inf")


class DenseReference:
    """The dense model's log-probabilities on fixed windows, computed once (kept as float16).

    Memory: windows x seqlen x vocab x 2 bytes (see `nbytes`)."""

    def __init__(self, model, windows: torch.Tensor, *, batch_size: int = 4, progress: Progress = no_progress):
        self.windows = windows
        self.batch_size = batch_size
        device = _device(model)
        parts = []
        with torch.no_grad():
            batches = windows.split(batch_size)
            for i, batch in enumerate(batches):
                logits = model(batch.to(device), use_cache=False).logits.float()
                parts.append(F.log_softmax(logits, dim=-1).half())
                progress("dense reference", i + 1, len(batches))
        self.log_probs = torch.cat(parts)

    @property
    def nbytes(self) -> int:
        return self.log_probs.numel() * self.log_probs.element_size()

    @torch.no_grad()
    def kl(self, model, progress: Progress = no_progress, windows: int | None = None) -> float:
        """Mean over tokens of KL(dense || model), on the first `windows` windows (default all)."""
        device = _device(model)
        total, count = 0.0, 0
        batches = self.windows[:windows].split(self.batch_size)
        for i, batch in enumerate(batches):
            start = i * self.batch_size
            log_q = F.log_softmax(model(batch.to(device), use_cache=False).logits.float(), dim=-1)
            log_p = self.log_probs[start:start + batch.shape[0]].float()
            total += (log_p.exp() * (log_p - log_q)).sum().item()
            count += batch.numel()
            progress("kl", i + 1, len(batches))
        return total / count
