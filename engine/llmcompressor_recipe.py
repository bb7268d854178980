"""An allocation as an llm-compressor recipe (the YAML its `oneshot` runs), for users who prune there.

llm-compressor 0.14's Wanda and SparseGPT modifiers take `sparsity` as one value per module that `targets`
matches, in the model's module order, and prune every Linear inside each matched module at its value. So an
allocation with one ratio per block targets the decoder blocks (one value each), and a finer one (per group or
per linear) targets each linear by its exact name; one modifier either way, since two modifiers of one type
in one group of a recipe are one YAML key (the last wins). What lies outside the blocks (embeddings, norms,
lm_head) matches no target and stays dense.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import WorkbenchError
from engine.progress import Progress, no_progress

MODIFIERS = {"wanda": "WandaPruningModifier", "sparsegpt": "SparseGPTModifier"}
DIGITS = 6  # ratios are written rounded to this many decimals


def block_prefix(linear: str) -> str:
    """The block a linear belongs to: `model.layers.3.self_attn.q_proj` -> `model.layers.3`."""
    found = re.match(r"(.*\.\d+)\.", linear)
    if not found:
        raise WorkbenchError(f"cannot tell the block of linear '{linear}' (no numbered module in its name)")
    return found.group(1)


def recipe_targets(linear_ratios: dict[str, float]) -> tuple[list[str], list[float]]:
    """(targets, sparsity per matched module): the blocks where each block's linears share one ratio, else every
    linear by name. `linear_ratios` in the model's module order."""
    blocks: dict[str, set[float]] = {}
    for name, ratio in linear_ratios.items():
        blocks.setdefault(block_prefix(name), set()).add(round(ratio, DIGITS))
    if all(len(ratios) == 1 for ratios in blocks.values()):
        stems = {re.sub(r"\.\d+$", "", prefix) for prefix in blocks}
        if len(stems) == 1:
            return [f"re:^{re.escape(stems.pop())}\\.\\d+$"], [ratios.pop() for ratios in blocks.values()]
    return list(linear_ratios), [round(r, DIGITS) for r in linear_ratios.values()]


def check_modifier(metric: str) -> None:
    """One line unless llm-compressor has a one-shot modifier for `metric`."""
    if metric not in MODIFIERS:
        raise WorkbenchError(f"llm-compressor prunes one-shot with {' or '.join(MODIFIERS)}, not {metric}: use one "
                             "of those metrics")


def llmcompressor_recipe(linear_ratios: dict[str, float], metric: str, pattern: str | None = None,
                         title: str = "") -> str:
    """The YAML text of a one-stage recipe applying `linear_ratios` with `metric`'s modifier (N:M `pattern`
    as its mask structure)."""
    check_modifier(metric)
    if any(not 0 <= r < 1 for r in linear_ratios.values()):
        raise WorkbenchError("every ratio of an llm-compressor recipe lies in [0, 1)")
    targets, sparsity = recipe_targets(linear_ratios)
    per = "decoder block" if len(targets) == 1 else "linear"
    lines = [f"# {title}" if title else None,
             f"# llm-compressor recipe (0.14): {MODIFIERS[metric]}, one sparsity per {per}, in module order;",
             "# what matches no target (embeddings, norms, lm_head) stays dense.",
             "pruning_stage:",
             "  pruning_modifiers:",
             f"    {MODIFIERS[metric]}:",
             "      targets: [" + ", ".join(_quoted(t) for t in targets) + "]",
             "      sparsity: [" + ", ".join(f"{s:.{DIGITS}f}".rstrip("0").rstrip(".") for s in sparsity) + "]",
             f"      mask_structure: '{pattern or '0:0'}'"]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"  # YAML single quotes: backslashes stay as they are


def ordered_ratios(linear_ratios: dict[str, float], module_names: list[str]) -> dict[str, float]:
    """`linear_ratios` in the model's module order (what llm-compressor's list follows)."""
    ordered = {name: linear_ratios[name] for name in module_names if name in linear_ratios}
    if len(ordered) != len(linear_ratios):
        missing = sorted(set(linear_ratios) - set(ordered))
        raise WorkbenchError(f"the model has no module {missing[0]} (the allocation is of another model)")
    return ordered


def session_recipe(session, method: str, target: float, metric: str, pattern: str | None = None,
                   progress: Progress = no_progress) -> tuple[str, dict[str, float]]:
    """(recipe text, ratios in module order) of an allocation on a session's model."""
    ratios = session.allocate(method, target, metric, progress=progress).linear_ratios
    ordered = ordered_ratios(ratios, [name for name, _ in session.loaded.model.named_modules()])
    title = f"dsa-workbench: {method} at {target:g} on {session.loaded.label}"
    return llmcompressor_recipe(ordered, metric, pattern, title=title), ordered


def write_recipe(text: str, out: str | Path, force: bool = False) -> Path:
    """The recipe written atomically to `out`; an existing file is kept unless `force`."""
    from engine.saving import refuse_existing, write_atomic

    out = refuse_existing(out, force)
    if out.is_dir():
        raise WorkbenchError(f"output {out} is a folder: name the recipe file, e.g. {out / 'recipe.yaml'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text)
    return out
