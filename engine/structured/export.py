"""Export a structure as a physically smaller model folder that AutoModelForCausalLM loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.choices import STRUCTURED_RECIPE_FORMAT as RECIPE_FORMAT
from engine.errors import WorkbenchError
from engine.evaluation import perplexity
from engine.progress import Progress, no_progress
from engine.saving import save_model_folder
from engine.structured.compact import parameter_count
from engine.structured.run import Workspace
from engine.structured.structure import Structure

VERIFY_TOKENS = 16


@dataclass(frozen=True)
class StructuredExport:
    path: Path
    params: int
    dense_params: int
    perplexity: float | None  # held-out, after the optional fine-tune


def export_structure(workspace: Workspace, structure: Structure, out: str | Path, *, finetune_tokens: int = 0,
                     force: bool = False, evaluate: bool = True, verify: bool = True,
                     progress: Progress = no_progress) -> StructuredExport:
    """Build the smaller model, optionally fine-tune it on `finetune_tokens` training tokens, write it
    atomically, reload it from the temporary folder and check its logits before the rename."""
    session = workspace.session
    model = workspace.compact(structure)
    workspace.prepared(model, finetune_tokens, progress)
    ppl = perplexity(model, session.windows("evaluation"), batch_size=session.data.batch_size, progress=progress,
                     stage="held-out perplexity") if evaluate else None
    recipe = {"format": RECIPE_FORMAT, "version": 1,
              "model": {"source": session.loaded.source, "label": session.loaded.label},
              "data": {"seed": session.data.seed, "seqlen": session.data.seqlen,
                       "calib_tokens": session.data.calib_tokens, "corpus": session.data.corpus},
              "structure": str(structure), "kept_fraction": workspace.db.kept_fraction(structure),
              "params": parameter_count(model), "dense_params": parameter_count(session.model),
              "finetune": {"tokens": finetune_tokens, "lr": workspace.lr}, "perplexity": ppl}
    probe = session.windows("evaluation")[:1, :VERIFY_TOKENS].to(next(model.parameters()).device)

    def check(folder: Path) -> None:
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=next(model.parameters()).dtype,
                                                        device_map={"": probe.device})
        with torch.no_grad():
            same = torch.allclose(reloaded(probe).logits, model(probe).logits, atol=1e-4, rtol=1e-4)
        if not same:
            raise WorkbenchError(f"verification failed: the reloaded model's logits differ ({folder})")

    path = save_model_folder(model, session.loaded.tokenizer, out, recipe, force=force,
                             verify=check if verify else None)
    return StructuredExport(path, recipe["params"], recipe["dense_params"], ppl)
