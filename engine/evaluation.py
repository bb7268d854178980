"""Perplexity on token windows, and KL divergence to the dense model's cached predictions.

The language-model head runs on HEAD_TOKENS positions at a time, so the float32 logits of a forward
never exceed HEAD_TOKENS x vocabulary (a batch of 4 x 2048 tokens of a 128k-vocabulary model would
otherwise hold 4 GiB of logits, three times over inside the loss).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.progress import Progress, no_progress

HEAD_TOKENS = 1024


def input_device(model) -> torch.device:
    """Where token ids go: the embedding's device (models spread over devices have several)."""
    return model.get_input_embeddings().weight.device


def _head_chunks(model, batch: torch.Tensor):
    """(start, stop, float32 logits [stop-start, vocab]) over the flattened positions of `batch`."""
    hidden = model.model(input_ids=batch.to(input_device(model)), use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1])
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    for start in range(0, hidden.shape[0], HEAD_TOKENS):
        logits = head(hidden[start:start + HEAD_TOKENS]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        yield start, start + logits.shape[0], logits


def _next_tokens(batch: torch.Tensor) -> torch.Tensor:
    """The target of each flattened position of `batch`: position j predicts token j+1, and the last position of
    each window, which has none, gets -100 (the losses' ignore_index)."""
    return torch.cat([batch[:, 1:], torch.full_like(batch[:, :1], -100)], dim=1).flatten()


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, *, batch_size: int = 4, progress: Progress = no_progress,
               stage: str = "perplexity") -> float:
    """exp of the mean next-token cross entropy over all windows ([n, seqlen] token ids)."""
    total, count = 0.0, 0
    batches = windows.split(batch_size)
    for i, batch in enumerate(batches):
        targets = _next_tokens(batch)
        for start, stop, logits in _head_chunks(model, batch):
            part = targets[start:stop].to(logits.device)
            total += F.cross_entropy(logits, part, ignore_index=-100, reduction="sum").item()
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
        parts = []
        with torch.no_grad():
            batches = windows.split(batch_size)
            for i, batch in enumerate(batches):
                parts += [F.log_softmax(logits, dim=-1).half() for _, _, logits in _head_chunks(model, batch)]
                progress("dense reference", i + 1, len(batches))
        self.log_probs = torch.cat(parts)  # [windows * seqlen, vocab]

    @property
    def nbytes(self) -> int:
        return self.log_probs.numel() * self.log_probs.element_size()

    @torch.no_grad()
    def window_losses(self, model, progress: Progress = no_progress,
                      windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per window (the first `windows`, default all), from one forward of `model`: the summed KL(dense ||
        model) over its positions, and its summed next-token cross entropy (the last position has no target)."""
        chosen = self.windows[:windows]
        seqlen = chosen.shape[1]
        kl, nll = torch.zeros(chosen.numel(), dtype=torch.float64), torch.zeros(chosen.numel(), dtype=torch.float64)
        batches = chosen.split(self.batch_size)
        for i, batch in enumerate(batches):
            offset = i * self.batch_size * seqlen
            targets = _next_tokens(batch)
            for start, stop, logits in _head_chunks(model, batch):
                log_q = F.log_softmax(logits, dim=-1)
                log_p = self.log_probs[offset + start:offset + stop].to(log_q.device).float()
                kl[offset + start:offset + stop] = (log_p.exp() * (log_p - log_q)).sum(dim=-1).cpu()
                part = targets[start:stop].to(log_q.device)
                nll[offset + start:offset + stop] = F.nll_loss(log_q, part, ignore_index=-100, reduction="none").cpu()
            progress("kl", i + 1, len(batches))
        return kl.view(-1, seqlen).sum(dim=1), nll.view(-1, seqlen).sum(dim=1)

    def kl(self, model, progress: Progress = no_progress, windows: int | None = None) -> float:
        """Mean over tokens of KL(dense || model), on the first `windows` windows (default all)."""
        per_window = self.window_losses(model, progress, windows)[0]
        return per_window.sum().item() / (len(per_window) * self.windows.shape[1])


def kl_between(dense, model, windows: torch.Tensor, *, batch_size: int = 4, progress: Progress = no_progress) -> float:
    """Mean over tokens of KL(dense || model) with both models in memory: one batch's dense log-probabilities
    at a time, so a long evaluation split never holds them all."""
    total = 0.0
    batches = windows.split(batch_size)
    for i, batch in enumerate(batches):
        total += DenseReference(dense, batch, batch_size=batch_size).kl(model) * batch.numel()
        progress("kl", i + 1, len(batches))
    return total / windows.numel()
