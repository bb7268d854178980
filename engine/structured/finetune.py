"""A short fine-tune (AdamW, next-token loss) of a pruned model on token windows."""

from __future__ import annotations

import math

import torch

from engine.errors import WorkbenchError
from engine.progress import Progress, no_progress

DEFAULT_LR = 1e-5


def finetune(model, windows: torch.Tensor, *, lr: float = DEFAULT_LR, batch_size: int = 4,
             progress: Progress = no_progress, stage: str = "fine-tune") -> float:
    """One pass over `windows` ([n, seqlen] token ids), one AdamW step per batch; returns the mean loss.

    The windows are used in order, so two models fine-tuned on the same windows saw the same data.
    A bfloat16 or float16 model is stepped through float32 master weights (mixed precision): a step of
    lr 1e-5 is below half the bfloat16 spacing of most weights and would otherwise be rounded away."""
    if not lr > 0 or not math.isfinite(lr):
        raise WorkbenchError(f"the learning rate must be a positive number (got {lr})")
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    masters = {p: p.detach().float() for p in params if p.dtype != torch.float32}
    optimizer = torch.optim.AdamW([masters.get(p, p) for p in params], lr=lr, weight_decay=0.0)
    batches = windows.split(batch_size)
    total = 0.0
    model.train()
    try:
        for i, batch in enumerate(batches):
            batch = batch.to(device)
            loss = model(batch, labels=batch, use_cache=False).loss
            if not torch.isfinite(loss):
                raise WorkbenchError(f"fine-tuning diverged (loss {loss.item()}): lower the learning rate")
            loss.backward()
            for p, master in masters.items():
                master.grad, p.grad = (None if p.grad is None else p.grad.float()), None
            optimizer.step()
            with torch.no_grad():
                for p, master in masters.items():
                    p.copy_(master)
            optimizer.zero_grad(set_to_none=True)
            total += loss.item()
            progress(stage, i + 1, len(batches))
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
    return total / max(1, len(batches))
