"""The headless subcommands: each turns parsed arguments into engine calls and one result."""

from __future__ import annotations

from transformers.utils import logging as transformers_logging

from engine.allocation import METHODS, AllocationFunction
from engine.allocation.mapping import check_target
from engine.errors import WorkbenchError
from engine.evaluation import DenseReference
from engine.loading import load_model
from engine.metrics import parse_pattern
from engine.export import export_pruned
from engine.saving import check_output, read_recipe
from engine.data_config import DataConfig
from engine.session import Session
from workbench.cli import print_result
from workbench.console import ProgressBars

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


def run(args) -> int:
    if args.command == "search":
        from workbench.search_command import search

        return search(args)
    if args.command == "tui":
        return tui(args)
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
    done = export_pruned(session, method, target, args.metric, args.out, pattern=pattern, force=args.force,
                         evaluate=not args.no_eval, progress=bars)
    summary = {"out": str(done.path), "metric": args.metric, "allocation": done.result.allocation.method,
               "target": target, "sparsity": done.result.sparsity, "dense_perplexity": done.dense_perplexity,
               "perplexity": done.perplexity, "block_ratios": list(done.result.allocation.block_ratios)}
    text = (f"pruned {session.loaded.label} with {args.metric} / {done.result.allocation.method} to "
            f"{done.result.sparsity:.4f} sparsity -> {done.path}")
    if done.perplexity is not None:
        text += (f"\nperplexity (held-out, {session.windows('evaluation').numel()} tokens): "
                 f"dense {done.dense_perplexity:.3f}, pruned {done.perplexity:.3f}")
    print_result(args, summary, text)
    return 0


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


def tui(args) -> int:
    from screens.settings import SearchParams
    from workbench.app import AppConfig, make_app
    from workbench.engine_api import EngineAPI

    params = SearchParams(sparsity=check_target(args.sparsity), metric=args.metric, run=args.run)
    api = EngineAPI(args.model, data_config(args), dtype=args.dtype, device=args.device)
    make_app(AppConfig(params=params), api).run()
    return 0
