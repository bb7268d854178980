"""The headless subcommands: each turns parsed arguments into engine calls and one result."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from transformers.utils import logging as transformers_logging

from engine.allocation import with_nan_policy
from engine.allocation.mapping import check_target
from engine.choices import METHODS, RECIPE_FORMAT, STRUCTURED_RECIPE_FORMAT
from engine.errors import WorkbenchError
from engine.evaluation import kl_between
from engine.export import export_pruned, read_recipe_file, replay_recipe
from engine.loading import load_model
from engine.metrics import parse_pattern
from engine.progress import no_progress
from engine.saving import RECIPE_NAME, check_output, folder_bytes
from engine.zeroshot import parse_tasks
from workbench.console import ProgressBars, print_result, zero_shot_lines
from workbench.options import calibration_mode, cluster_options, data_config
from workbench.preflight import check_plan
from workbench.sessions import open_run_session, open_session, run_best

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


# command -> (module, function), imported when the command runs: only what it needs is loaded
COMMANDS = {
    "tui": ("workbench.commands", "tui"),
    "prune": ("workbench.commands", "prune"),
    "export": ("workbench.commands", "prune"),
    "eval": ("workbench.commands", "evaluate"),
    "allocations": ("workbench.commands", "allocations"),
    "search": ("workbench.search_command", "search"),
    "structured": ("workbench.structured_command", "structured"),
    "plan": ("workbench.preflight", "plan"),
    "distill": ("workbench.result_commands", "distill_command"),
    "transfer": ("workbench.result_commands", "transfer_command"),
    "recipe": ("workbench.result_commands", "recipe_command"),
    "report": ("workbench.result_commands", "report_command"),
}


def run(args) -> int:
    if getattr(args, "verbose", False):  # lm-eval's own logs and bars
        for name in ("engine.zeroshot", "lm_eval"):
            logging.getLogger(name).setLevel(logging.INFO)
    module, function = COMMANDS[args.command]
    return getattr(importlib.import_module(module), function)(args)


def prune(args) -> int:
    """`prune` and `export`: an allocation (or function, search run, recipe) to a verified model folder."""
    bars = ProgressBars(not args.quiet)
    options = dict(force=args.force, dtype=args.out_dtype, max_shard_size=args.shard_size,
                   sparse_format=args.format, progress=bars, tasks=parse_tasks(args.tasks), limit=args.limit)
    if getattr(args, "recipe", None):
        recipe = read_recipe_file(args.recipe)
        check_plan(args, "prune", recipe.get("model", {}).get("source"), metric=recipe.get("metric", "wanda"),
                   calibration=recipe.get("calibration", "dense"))
        done = replay_recipe(recipe, args.out, device=args.device, status=bars.status, **options)
        return report_export(args, done, "replayed " + args.recipe)
    if getattr(args, "from_run", None):
        settings, best = run_best(args.from_run)
        check_output(args.out, args.force)
        calibration = calibration_mode(args)
        check_plan(args, "prune", settings.model, metric=settings.metric, calibration=calibration, data=settings.data)
        session = open_run_session(args, settings, bars, restorable=False)
        done = export_pruned(session, best, settings.sparsity, settings.metric, args.out,
                             calibration=calibration, evaluate=not args.no_eval, verify=not args.no_verify,
                             **options)
        return report_export(args, done, f"best of {args.from_run}")
    pattern = parse_pattern(args.pattern)
    method = getattr(args, "function", None) or args.allocation
    if pattern is not None:
        if args.sparsity is not None and abs(args.sparsity - pattern.ratio) > 1e-9:
            raise WorkbenchError(f"--pattern {pattern} means sparsity {pattern.ratio:g}; drop --sparsity")
        if method != "uniform":
            raise WorkbenchError(f"--pattern {pattern} prunes every layer alike: it needs --allocation uniform")
        target = pattern.ratio
    elif args.sparsity is None:
        raise WorkbenchError("--sparsity is required (or give --pattern N:M)")
    else:
        target = check_target(args.sparsity)
    method = with_nan_policy(method, args.nan_policy)
    check_output(args.out, args.force)
    calibration = calibration_mode(args)
    check_plan(args, "prune", args.model, metric=args.metric, calibration=calibration)
    session = open_session(args, args.model, bars, restorable=False)
    done = export_pruned(session, method, target, args.metric, args.out, pattern=pattern,
                         calibration=calibration, evaluate=not args.no_eval, verify=not args.no_verify, **options)
    return report_export(args, done, session.loaded.label)


def report_export(args, done, source: str) -> int:
    alloc = done.result.allocation
    size = folder_bytes(done.path)
    summary = {"out": str(done.path), "metric": done.result.metric, "allocation": alloc.method,
               "target": alloc.target, "sparsity": done.sparsity, "dense_perplexity": done.dense_perplexity,
               "perplexity": done.perplexity, "block_ratios": list(alloc.block_ratios), "bytes": size,
               "corpora": done.recipe["data"]["corpora"], "parameters": alloc.parameters}
    text = (f"pruned {source} with {done.result.metric} / {alloc.method} to {done.sparsity:.4f} sparsity "
            f"-> {done.path} ({size / 2**20:.0f} MiB)")
    if done.perplexity is not None:
        text += f"\nheld-out perplexity: dense {done.dense_perplexity:.3f}, pruned {done.perplexity:.3f}"
    zero_shot = done.recipe.get("zero_shot")
    if zero_shot:
        summary["zero_shot"] = zero_shot
        text = "\n".join([text] + zero_shot_lines(zero_shot["dense"], " (dense)")
                         + zero_shot_lines(zero_shot["pruned"], " (pruned)"))
    print_result(args, summary, text)
    return 0


def evaluate(args) -> int:
    bars = ProgressBars(not args.quiet)
    has_recipe = (Path(args.model).expanduser() / RECIPE_NAME).is_file()
    recipe = read_recipe_file(args.model, (RECIPE_FORMAT, STRUCTURED_RECIPE_FORMAT)) if has_recipe else None
    check_plan(args, "eval", args.model)
    session = open_session(args, args.model, bars)
    windows = session.windows("evaluation")
    result = {"model": args.model, "tokens": windows.numel(), "perplexity": session.perplexity(),
              "corpora": session.corpora}
    text = (f"perplexity of {args.model} on {windows.numel()} tokens of {session.corpora['evaluation']}: "
            f"{result['perplexity']:.3f}")
    if args.kl:
        dense_source = args.dense or (recipe or {}).get("model", {}).get("source", "")
        if dense_source == "" and not args.dense:
            raise WorkbenchError(f"--kl needs --dense: {args.model} has no pruning.json naming its dense model")
        dense = load_model(dense_source, dtype=args.dtype, device=args.device, device_map=args.device_map,
                           trust_remote_code=args.trust_remote_code, status=bars.status)
        result["kl"] = kl_between(dense.model, session.model, windows, batch_size=session.data.batch_size,
                                  progress=bars)
        result["dense"] = dense.label
        text += f"\nKL(dense || model): {result['kl']:.5f} nats/token"
    tasks = parse_tasks(args.tasks)
    if tasks:
        result["zero_shot"] = session.zero_shot(tasks, args.limit, bars)
        text = "\n".join([text] + zero_shot_lines(result["zero_shot"]))
    print_result(args, result, text)
    return 0


def allocations(args) -> int:
    target = check_target(args.sparsity)
    methods = [with_nan_policy(m, args.nan_policy) for m in list(METHODS) + args.function]
    bars = ProgressBars(not args.quiet)
    check_plan(args, "allocations", args.model, metric=args.metric)
    session = open_session(args, args.model, bars)
    # The calibration first, with a bar of its own: the metric's inputs, and Wanda's, which OWL and DLP read
    # whatever the metric.
    for metric in dict.fromkeys((args.metric, "wanda")):
        session.allocation_inputs(metric)
    columns, errors = {}, {}
    for i, method in enumerate(methods):  # one bar over the methods (the tuned ones score their grids silently)
        bars("allocations", i, len(methods))
        try:
            columns[method] = session.allocate(method, target, args.metric, progress=no_progress)
        except WorkbenchError as exc:  # an invalid function is a result here, not a failure
            errors[method] = str(exc)
    bars("allocations", len(methods), len(methods))
    parameters = {m: a.parameters for m, a in columns.items() if a.parameters}
    result = {"target": target, "metric": args.metric,
              "methods": {m: list(a.block_ratios) for m, a in columns.items()}, "rejected": errors,
              "parameters": parameters}
    notes = [f"{m}: " + ", ".join(f"{k} {v}" for k, v in p.items()) for m, p in parameters.items()]
    print_result(args, result, "\n".join([format_table(columns, errors)] + notes))
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
    from workbench.app import AppConfig, make_app
    from workbench.contract import RunOptions
    from workbench.engine_api import EngineAPI
    from workbench.search_command import settings_from

    settings = settings_from(args)
    cluster, workers = cluster_options(args)
    check_plan(args, "tui", args.model, metric=args.metric)
    api = EngineAPI(args.model, data_config(args), dtype=args.dtype, device=args.device, device_map=args.device_map)
    app = make_app(AppConfig(settings, RunOptions(args.run, cluster=cluster or "", workers=workers or 0)), api)
    app.run()
    return app.return_code or 0  # 1 after an unhandled error inside the app
