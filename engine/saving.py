"""Write a model folder atomically: everything goes to a temporary sibling, then one rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from engine.errors import WorkbenchError

RECIPE_NAME = "pruning.json"


def check_output(out: str | Path, force: bool) -> Path:
    """Refuse an existing output unless `force`; make sure its parent can be written."""
    out = Path(out).expanduser()
    if out.exists() and not force:
        raise WorkbenchError(f"output {out} already exists (use --force to replace it)")
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"output {out} exists and is not a folder")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise WorkbenchError(f"cannot write to {parent}")
    return out


def save_model_folder(model, tokenizer, out: str | Path, recipe: dict, *, force: bool = False,
                      dtype=None) -> Path:
    """save_pretrained + tokenizer + pruning.json, in a temp folder renamed into place.

    `dtype` (a torch dtype) converts the saved tensors, not the model in memory."""
    out = check_output(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if dtype is None:
            model.save_pretrained(tmp)
        else:
            state = {k: v.to(dtype) for k, v in model.state_dict().items()}
            original = model.config.dtype
            model.config.dtype = dtype
            try:
                model.save_pretrained(tmp, state_dict=state)
            finally:
                model.config.dtype = original
        tokenizer.save_pretrained(tmp)
        (tmp / RECIPE_NAME).write_text(json.dumps(recipe, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_recipe(folder: str | Path) -> dict | None:
    path = Path(folder) / RECIPE_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path} is not valid JSON ({exc.msg})") from exc
