"""Prune a session's model with one allocation and write it as a model folder that loads anywhere,
verified after writing; replay a recipe (pruning.json) to reproduce the same weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.compressed import load_compressed
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.loading import DTYPES, load_model
from engine.choices import EXPORT_FORMATS, RECIPE_FORMAT
from engine.metrics import NMPattern, parse_pattern
from engine.progress import Progress, no_progress
from engine.recipe import make_recipe
from engine.saving import check_output, save_model_folder
from engine.session import PruneResult, Session


@dataclass(frozen=True)
class ExportResult:
    path: Path
    result: PruneResult
    sparsity: float  # achieved over all block linears
    dense_perplexity: float | None
    perplexity: float | None
    recipe: dict


def export_pruned(session: Session, method: str, sparsity: float, metric: str, out: str | Path, *,
                  pattern: NMPattern | None = None, calibration: str = "dense", dtype: str = "keep",
                  force: bool = False, evaluate: bool = True, verify: bool = True, max_shard_size: str = "5GB",
                  sparse_format: str = "dense", progress: Progress = no_progress, tasks: tuple[str, ...] = (),
                  limit: int | None = None) -> ExportResult:
    """Allocate, prune, (evaluate: perplexity; zero-shot accuracy on `tasks`, dense and pruned), save atomically
    and (verify). The session's model stays pruned. `progress` hears of every stage: the perplexities, the
    pruning, the writing and the verification (tensors)."""
    check_output(out, force)
    save_dtype = None if dtype in (None, "keep") else DTYPES.get(dtype)
    if dtype not in (None, "keep") and save_dtype is None:
        raise WorkbenchError(f"unknown export dtype '{dtype}'; use keep, float16 or bfloat16")
    if sparse_format not in EXPORT_FORMATS:
        raise WorkbenchError(f"unknown format '{sparse_format}'; use one of {', '.join(EXPORT_FORMATS)}")
    with session.lock:
        allocation = session.allocate(method, sparsity, metric)  # an invalid function fails before any forward
        if evaluate or tasks:
            session.restore()
        dense_ppl = session.perplexity(progress=progress) if evaluate else None
        zero_shot = {"tasks": list(tasks), "limit": limit, "dense": session.zero_shot(tasks, limit)} if tasks else None
        result = session.prune(allocation, metric, pattern, progress=progress, calibration=calibration)
        ppl = session.perplexity(progress=progress) if evaluate else None
        session.write_pruned()  # before the zero-shot forwards: many small ones, each would remake the masks
        if zero_shot:
            zero_shot["pruned"] = session.zero_shot(tasks, limit)
        recipe = make_recipe(session, result, session.achieved(), dense_ppl, ppl, zero_shot)
        check = (lambda folder: verify_folder(folder, session, recipe, save_dtype, sparse_format, progress)) \
            if verify else None
        path = save_model_folder(session.model, session.loaded.tokenizer, out, recipe, force=force,
                                 dtype=save_dtype, max_shard_size=max_shard_size, sparse_format=sparse_format,
                                 verify=check, progress=progress)
    return ExportResult(path, result, recipe["achieved"]["sparsity"], dense_ppl, ppl, recipe)


@torch.no_grad()
def verify_folder(folder: Path, session: Session, recipe: dict, dtype, sparse_format: str = "dense",
                  progress: Progress = no_progress) -> None:
    """Every saved tensor equals the in-memory pruned model's (in the saved dtype), every linear's zero
    fraction equals the recipe's, and transformers builds the architecture from the saved config with no
    weight left out. Tensors are read one at a time: no second copy of the model, whatever its size."""
    from transformers import AutoConfig, AutoModelForCausalLM

    mine = session.model.state_dict()
    if sparse_format == "compressed-tensors":
        reloaded = load_compressed(folder, dtype or session.loaded.dtype).state_dict()
        saved, total = ((name, reloaded[name]) for name in reloaded), len(reloaded)
    else:
        saved, total = saved_tensors(folder), saved_count(folder)
    seen = set()
    for name, tensor in saved:
        if name not in mine:
            raise WorkbenchError(f"verification failed: the folder holds {name}, which the model has not")
        expected = mine[name].detach().to("cpu", dtype or mine[name].dtype)
        if not torch.equal(tensor, expected):
            raise WorkbenchError(f"verification failed: {name} differs from the pruned model's")
        if name.removesuffix(".weight") in recipe["achieved"]["linears"] and dtype is None:
            got = (tensor == 0).sum().item() / tensor.numel()
            if got != recipe["achieved"]["linears"][name.removesuffix(".weight")]:
                raise WorkbenchError(f"verification failed: {name} has sparsity {got}, the recipe says otherwise")
        seen.add(name)
        progress("verifying tensors", len(seen), total)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    tied = {name for name, p in skeleton.named_parameters(remove_duplicate=False)} - \
        {name for name, p in skeleton.named_parameters()}
    missing = set(dict(skeleton.named_parameters())) - seen - tied
    if missing:
        raise WorkbenchError(f"verification failed: the folder lacks {sorted(missing)[0]}")


def saved_count(folder: Path) -> int:
    """How many tensors the safetensors files of `folder` hold (their headers read, not the tensors)."""
    from safetensors import safe_open

    count = 0
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(path, "pt") as fh:
            count += len(fh.keys())
    return count


def saved_tensors(folder: Path):
    """(name, tensor) of every safetensors file in `folder`, one tensor at a time."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(path, "pt") as fh:
            for name in fh.keys():
                yield name, fh.get_tensor(name)


def read_recipe_file(path: str | Path, formats: tuple[str, ...] = (RECIPE_FORMAT,)) -> dict:
    """A pruning.json (or the one in a model folder) of one of `formats`."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "pruning.json"
    if not path.is_file():
        raise WorkbenchError(f"no such recipe: {path}")
    try:
        recipe = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path} is not valid JSON ({exc.msg})") from exc
    if not isinstance(recipe, dict) or recipe.get("format") not in formats:
        raise WorkbenchError(f"{path} is not a dsa-workbench pruning recipe")
    return recipe


def replay_recipe(recipe: dict, out: str | Path, *, force: bool = False, dtype: str = "keep",
                  device: str = "auto", max_shard_size: str = "5GB", sparse_format: str = "dense",
                  status=lambda m: None, progress: Progress = no_progress, tasks: tuple[str, ...] = (),
                  limit: int | None = None) -> ExportResult:
    """Load the recipe's model (checking its fingerprint), same data and settings (batch size, device type and
    dtype included: calibration sums depend on them), prune, export. `device` "auto" means the recipe's; the
    recipe's zero-shot tasks are scored again unless `tasks` names others."""
    check_output(out, force)
    try:
        model, d, alloc = recipe["model"], recipe["data"], recipe["allocation"]
        recorded = model.get("device")
        if device == "auto" and recorded:
            device = recorded
        elif recorded and device.split(":")[0] != recorded:
            status(f"the recipe was made on {recorded}: on {device} the weights can differ in the last bits")
        data = DataConfig(corpus=d["corpus"], eval_corpus=d.get("eval_corpus"), seed=d["seed"], seqlen=d["seqlen"],
                          calib_tokens=d["calib_tokens"],
                          eval_tokens=d["eval_tokens"], sample_size=d["sample_size"],
                          batch_size=d.get("batch_size", DataConfig.batch_size),
                          calib_sampling=d.get("calib_sampling", DataConfig.calib_sampling))
        method, target, metric = alloc["method"], alloc["target"], recipe["metric"]
        calibration = recipe.get("calibration", "dense")
        pattern, evaluate = parse_pattern(recipe["pattern"]), recipe["perplexity"]["pruned"] is not None
        source, fingerprint, model_dtype = model["source"], model["fingerprint"], model.get("dtype", "auto")
        if not tasks and recipe.get("zero_shot"):
            tasks, limit = tuple(recipe["zero_shot"]["tasks"]), recipe["zero_shot"]["limit"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise WorkbenchError(f"the recipe is incomplete or corrupt (missing {exc})") from exc
    loaded = load_model(source, dtype=model_dtype, device=device, status=status)
    if loaded.fingerprint != fingerprint:
        raise WorkbenchError(f"the model at {source or 'the default source'} is not the one the recipe "
                             f"was made from ({loaded.fingerprint[:30]}... != {fingerprint[:30]}...)")
    session = Session(loaded, data, progress=progress, restorable=False)
    return export_pruned(session, method, target, metric, out, pattern=pattern, calibration=calibration, dtype=dtype,
                         force=force, evaluate=evaluate, max_shard_size=max_shard_size, sparse_format=sparse_format,
                         progress=progress, tasks=tasks, limit=limit)
