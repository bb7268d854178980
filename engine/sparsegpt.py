"""SparseGPT: OBS-style pruning of one linear with an update of the remaining weights."""

from __future__ import annotations

import torch

from engine.errors import WorkbenchError
from engine.metrics import NMPattern


@torch.no_grad()
def sparsegpt_prune_(weight: torch.Tensor, hessian: torch.Tensor, ratio: float,
                     pattern: NMPattern | None = None, blocksize: int = 128, percdamp: float = 0.01) -> None:
    """Prune `weight` in place to `ratio` (or to `pattern`), updating kept weights with H^-1."""
    W = weight.float().clone()
    H = hessian.float().clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    Hinv = _inverse_cholesky(H, percdamp)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag = torch.diag(Hinv1)
        if pattern is None:
            saliency = W1 ** 2 / diag[None, :] ** 2
            k = int(round(saliency.numel() * ratio))
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
            if k:
                mask1.view(-1)[saliency.view(-1).topk(k, largest=False).indices] = True
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w = W1[:, i]
            if pattern is not None and i % pattern.m == 0:
                sal = W1[:, i:i + pattern.m] ** 2 / diag[i:i + pattern.m][None, :] ** 2
                low = sal.topk(pattern.n, dim=1, largest=False).indices
                mask1.scatter_(1, i + low, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    weight.copy_(W.to(weight.dtype))


def _inverse_cholesky(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1, adding more damping if H is not positive definite."""
    mean_diag = torch.diag(H).mean()
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for damp in (percdamp, percdamp * 10, percdamp * 100):
        L, info = torch.linalg.cholesky_ex(H + damp * mean_diag * eye)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                return U
    raise WorkbenchError("SparseGPT: the calibration Hessian is not positive definite even with damping; "
                         "use more calibration tokens")
