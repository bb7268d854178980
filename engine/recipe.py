"""The pruning recipe written beside an exported model (pruning.json)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from engine.architecture import block_means
from engine.choices import RECIPE_FORMAT



def make_recipe(session, result, linear_sparsity: dict[str, float], dense_ppl: float | None,
                pruned_ppl: float | None, zero_shot: dict | None = None) -> dict:
    """Everything needed to reproduce and audit a pruned model: source, metric, allocation, data, results.

    Calibration sums depend on the batch size, the device and the dtype (floating-point order), so all
    three are recorded and a replay uses them."""
    alloc = result.allocation
    return {
        "format": RECIPE_FORMAT,
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"source": session.loaded.source, "label": session.loaded.label,
                  "fingerprint": session.loaded.fingerprint, "dtype": str(session.loaded.dtype).removeprefix("torch."),
                  "device": session.loaded.device.type},
        "metric": result.metric,
        "pattern": result.pattern,
        "calibration": result.calibration,
        "allocation": {"method": alloc.method, "target": alloc.target, "block_ratios": list(alloc.block_ratios),
                       "linear_ratios": alloc.linear_ratios, "parameters": alloc.parameters},
        "achieved": {"sparsity": _overall(session, linear_sparsity),
                     "blocks": block_means(session.blocks, linear_sparsity), "linears": linear_sparsity},
        "data": {"corpus": session.data.corpus, "corpus_label": session.splits.source,
                 "eval_corpus": session.data.eval_corpus, "corpora": session.corpora, "seed": session.data.seed,
                 "seqlen": session.data.seqlen, "calib_tokens": session.data.calib_tokens,
                 "eval_tokens": session.data.eval_tokens, "sample_size": session.data.sample_size,
                 "batch_size": session.data.batch_size, "calib_sampling": session.data.calib_sampling},
        "perplexity": {"dense": dense_ppl, "pruned": pruned_ppl},
        "zero_shot": zero_shot,  # tasks, limit, and per task the dense and the pruned model's accuracy
        "versions": versions(),
    }


def _overall(session, linear_sparsity: dict[str, float]) -> float:
    sizes = {n: lin.weight.numel() for b in session.blocks for n, lin in b.linears.items()}
    return sum(linear_sparsity[n] * sizes[n] for n in sizes) / sum(sizes.values())


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("dsa-workbench", "torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
