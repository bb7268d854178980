"""The headless subcommands: each turns parsed arguments into engine calls and one result."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from transformers.utils import logging as transformers_logging

from engine.allocation import METHODS, AllocationFunction
from engine.allocation.mapping import check_target
from engine.errors import WorkbenchError
from engine.evaluation import DenseReference
from engine.loading import load_model
from engine.metrics import parse_pattern
from engine.saving import check_output, read_recipe, save_model_folder
from engine.data_config import DataConfig
from engine.session import Session
from workbench.cli import print_result
from workbench.console import ProgressBars

RECIPE_FORMAT = "dsa-workbench/pruning"

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


def run(args) -> int:
    if args.command == "search":
        from workbench.search_command import search

        return search(args)
    return {"prune": prune, "eval": evaluate, "allocations": allocations}[args.command](args)


def data_config(args) -> DataConfig:
    flags = ("seqlen", "calib_tokens", "eval_tokens", "fitness_tokens", "batch_size")
    values = {f: getattr(args, f) for f in flags if hasattr(args, f)}
    for flag, value in values.items():
        if value < 1:
            raise WorkbenchError(f"--{flag.replace('_', '-')} must be positive (got {value})")
    return DataConfig(corpus=args.corpus, seed=args.seed, **values)


def open_session(args, source: str | None, bars: ProgressBars) -> Session:
    loaded = load_model(source, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                        status=bars.status)
    return Session(loaded, data_config(args), progress=bars)


def check_method(method: str) -> str:
    """A method name, or the canonical text of a function (raises on an invalid one)."""
    return method if method in METHODS or method == "alphapruning" else str(AllocationFunction.parse(method))


def prune(args) -> int:
    pattern = parse_pattern(args.pattern)
    if pattern is not None:
        if args.sparsity is not None and abs(args.sparsity - pattern.ratio) > 1e-9:
            raise WorkbenchError(f"--pattern {pattern} means sparsity {pattern.ratio:g}; drop --sparsity")
        if args.allocation != "uniform":
            raise WorkbenchError(f"--pattern {pattern} prunes every layer alike: it needs --allocation uniform")
        target = pattern.ratio
    elif args.sparsity is None:
        raise WorkbenchError("--sparsity is required (or give --pattern N:M)")
    else:
        target = check_target(args.sparsity)
    method = check_method(args.allocation)
    check_output(args.out, args.force)
    bars = ProgressBars(not args.quiet)
    session = open_session(args, args.model, bars)
    dense_ppl = None if args.no_eval else session.perplexity()
    allocation = session.allocate(method, target, args.metric)
    result = session.prune(allocation, args.metric, pattern)
    pruned_ppl = None if args.no_eval else session.perplexity()
    recipe = make_recipe(session, result, dense_ppl, pruned_ppl)
    bars.status(f"saving to {args.out}")
    out = save_model_folder(session.model, session.loaded.tokenizer, args.out, recipe, force=args.force)
    summary = {"out": str(out), "metric": args.metric, "allocation": allocation.method, "target": target,
               "sparsity": result.sparsity, "dense_perplexity": dense_ppl, "perplexity": pruned_ppl,
               "block_ratios": list(allocation.block_ratios)}
    text = (f"pruned {session.loaded.label} with {args.metric} / {allocation.method} to "
            f"{result.sparsity:.4f} sparsity -> {out}")
    if pruned_ppl is not None:
        text += f"\nperplexity (held-out, {session.windows('evaluation').numel()} tokens): dense {dense_ppl:.3f}, " \
                f"pruned {pruned_ppl:.3f}"
    print_result(args, summary, text)
    return 0


def make_recipe(session: Session, result, dense_ppl, pruned_ppl) -> dict:
    alloc = result.allocation
    return {
        "format": RECIPE_FORMAT,
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"source": session.loaded.source, "label": session.loaded.label,
                  "fingerprint": session.loaded.fingerprint, "dtype": str(session.loaded.dtype).removeprefix("torch.")},
        "metric": result.metric,
        "pattern": result.pattern,
        "allocation": {"method": alloc.method, "target": alloc.target, "block_ratios": list(alloc.block_ratios),
                       "linear_ratios": alloc.linear_ratios},
        "achieved": {"sparsity": result.sparsity, "linears": result.linear_sparsity},
        "data": {"corpus": session.data.corpus, "corpus_label": session.splits.source, "seed": session.data.seed,
                 "seqlen": session.data.seqlen, "calib_tokens": session.data.calib_tokens,
                 "eval_tokens": session.data.eval_tokens, "sample_size": session.data.sample_size},
        "perplexity": {"dense": dense_ppl, "pruned": pruned_ppl},
        "versions": _versions(),
    }


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("dsa-workbench", "torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def evaluate(args) -> int:
    bars = ProgressBars(not args.quiet)
    recipe = read_recipe(args.model) if _is_dir(args.model) else None
    session = open_session(args, args.model, bars)
    windows = session.windows("evaluation")
    result = {"model": args.model, "tokens": windows.numel(), "perplexity": session.perplexity()}
    text = f"perplexity of {args.model} on {windows.numel()} held-out tokens: {result['perplexity']:.3f}"
    if args.kl:
        dense_source = args.dense or (recipe or {}).get("model", {}).get("source", "")
        if dense_source == "" and not args.dense:
            raise WorkbenchError(f"--kl needs --dense: {args.model} has no pruning.json naming its dense model")
        dense = load_model(dense_source, dtype=args.dtype, device=args.device,
                           trust_remote_code=args.trust_remote_code, status=bars.status)
        reference = DenseReference(dense.model, windows, batch_size=args.batch_size, progress=bars)
        result["kl"] = reference.kl(session.model, bars)
        result["dense"] = dense.label
        text += f"\nKL(dense || model): {result['kl']:.5f} nats/token"
    print_result(args, result, text)
    return 0


def _is_dir(path: str) -> bool:
    from pathlib import Path

    return Path(path).expanduser().is_dir()


def allocations(args) -> int:
    target = check_target(args.sparsity)
    methods = list(METHODS) + [check_method(f) for f in args.function]
    bars = ProgressBars(not args.quiet)
    session = open_session(args, args.model, bars)
    columns, errors = {}, {}
    for method in methods:
        try:
            columns[method] = session.allocate(method, target, args.metric)
        except WorkbenchError as exc:  # an invalid function is a result here, not a failure
            errors[method] = str(exc)
    result = {"target": target, "metric": args.metric,
              "methods": {m: list(a.block_ratios) for m, a in columns.items()}, "rejected": errors}
    print_result(args, result, format_table(columns, errors))
    return 0


def format_table(columns: dict, errors: dict) -> str:
    names = list(columns)
    width = max([9] + [len(n) for n in names if len(n) <= 24])
    label = {n: (n if len(n) <= 24 else f"f{i}") for i, n in enumerate(names)}
    lines = ["block " + " ".join(f"{label[n]:>{width}}" for n in names)]
    n_blocks = len(next(iter(columns.values())).block_ratios) if columns else 0
    for b in range(n_blocks):
        lines.append(f"{b:>5} " + " ".join(f"{columns[n].block_ratios[b]:>{width}.4f}" for n in names))
    lines += [f"{label[n]} = {n}" for n in names if label[n] != n]
    lines += [f"{m}: rejected: {e}" for m, e in errors.items()]
    return "\n".join(lines)
