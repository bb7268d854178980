"""Prune a session's model with one allocation and write it as a loadable model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from engine.loading import DTYPES
from engine.errors import WorkbenchError
from engine.metrics import NMPattern
from engine.progress import Progress, no_progress
from engine.recipe import make_recipe
from engine.saving import check_output, save_model_folder
from engine.session import PruneResult, Session


@dataclass(frozen=True)
class ExportResult:
    path: Path
    result: PruneResult
    dense_perplexity: float | None
    perplexity: float | None
    recipe: dict


def export_pruned(session: Session, method: str, sparsity: float, metric: str, out: str | Path, *,
                  pattern: NMPattern | None = None, dtype: str = "keep", force: bool = False,
                  evaluate: bool = True, progress: Progress = no_progress) -> ExportResult:
    """Allocate, prune, (evaluate), save atomically. The session's model stays pruned afterwards."""
    check_output(out, force)
    save_dtype = None if dtype in (None, "keep") else DTYPES.get(dtype)
    if dtype not in (None, "keep") and save_dtype is None:
        raise WorkbenchError(f"unknown export dtype '{dtype}'; use keep, float16 or bfloat16")
    with session.lock:
        if evaluate:
            session.restore()
        dense_ppl = session.perplexity() if evaluate else None
        allocation = session.allocate(method, sparsity, metric)
        result = session.prune(allocation, metric, pattern, progress=progress)
        ppl = session.perplexity() if evaluate else None
        recipe = make_recipe(session, result, dense_ppl, ppl)
        path = save_model_folder(session.model, session.loaded.tokenizer, out, recipe, force=force, dtype=save_dtype)
    return ExportResult(path, result, dense_ppl, ppl, recipe)


__all__ = ["ExportResult", "export_pruned"]
