"""`distill`, `transfer`, `recipe` and `report`: what to do with a search's result besides exporting it."""

from __future__ import annotations

from pathlib import Path

from engine.allocation import canonical_method, with_nan_policy
from engine.allocation.distill import distill
from engine.allocation.mapping import check_target
from engine.allocation.profiles import PROFILE, parse_block_form
from engine.errors import WorkbenchError
from engine.export import read_recipe_file
from engine.metrics import check_metric, parse_pattern
from engine.saving import refuse_existing
from engine.session import Session
from workbench.console import ProgressBars, print_result
from workbench.preflight import check_plan
from workbench.sessions import open_run_session, open_session, run_best


def best_of_run(args, bars: ProgressBars) -> tuple[Session, str, float, str]:
    """(session on the run's model and data, its best text, target, metric) of `--from-run`."""
    settings, best = run_best(args.from_run)
    check_plan(args, "allocations", settings.model, metric=settings.metric, data=settings.data)
    return open_run_session(args, settings, bars), best, settings.sparsity, settings.metric


def distill_command(args) -> int:
    bars = ProgressBars(not args.quiet)
    if args.from_run:
        session, profile, target, metric = best_of_run(args, bars)
    else:
        profile, metric = canonical_method(args.profile), args.metric
        values = parse_block_form(profile)[1]
        target = check_target(args.sparsity if args.sparsity is not None else sum(values) / len(values))
        check_plan(args, "allocations", args.model, metric=metric)
        session = open_session(args, args.model, bars)
    if not profile.startswith(f"{PROFILE}:"):
        raise WorkbenchError(f"the best of {args.from_run} is not a profile (it is {profile!r}): distill reads "
                             "the result of a --strategy evopress search")
    ratios = list(session.allocate(profile, target, metric).block_ratios)
    found = distill(ratios, session.allocation_inputs(metric, progress=bars), target)
    result = {"profile": profile, "function": found.function, "rmse": found.rmse, "max_error": found.max_error,
              "tried": found.tried, "target": target, "metric": metric}
    text = (f"closest function ({found.tried} compared): {found.function}\n"
            f"distance to the profile: rms {found.rmse:.4f}, largest {found.max_error:.4f} (block sparsity)")
    if not args.no_eval:
        held = {name: session.score(method, target, metric, progress=bars)[1]
                for name, method in (("uniform", "uniform"), ("profile", profile), ("function", found.function))}
        gain = held["uniform"] - held["profile"]
        result |= {"held_out_perplexity": held, "gain_kept": (held["uniform"] - held["function"]) / gain if gain
                   else None, "corpora": session.corpora}
        text += (f"\nheld-out perplexity: uniform {held['uniform']:.2f}, profile {held['profile']:.2f}, "
                 f"function {held['function']:.2f}")
        if gain > 0:
            text += f"; the function keeps {result['gain_kept']:.0%} of the profile's gain over uniform"
    print_result(args, result, text)
    return 0


def transfer_command(args) -> int:
    bars = ProgressBars(not args.quiet)
    targets = [check_target(_number(s, "--sparsities")) for s in args.sparsities.split(",") if s.strip()]
    metrics = [check_metric(m.strip()) for m in args.metrics.split(",") if m.strip()]
    methods = ["uniform"] + [with_nan_policy(m, args.nan_policy) for m in args.method]
    if args.from_run:
        session, best, _, _ = best_of_run(args, bars)
        methods.append(best)
    else:
        if len(methods) == 1:
            raise WorkbenchError("give --from-run or at least one --method to transfer")
        check_plan(args, "allocations", args.model, metric=metrics[0])
        session = open_session(args, args.model, bars)
    methods = list(dict.fromkeys(methods))
    rows = []
    for metric in metrics:
        for target in targets:
            row = {"metric": metric, "sparsity": target, "perplexity": {}}
            for method in methods:
                try:
                    row["perplexity"][method] = session.score(method, target, metric, progress=bars)[1]
                except WorkbenchError as exc:
                    row["perplexity"][method] = f"rejected: {exc}"
            rows.append(row)
    labels = {m: (m if len(m) <= 16 else f"m{i}") for i, m in enumerate(methods)}
    lines = ["metric    sparsity " + " ".join(f"{labels[m]:>16}" for m in methods)]
    for row in rows:
        cells = [f"{v:>16.2f}" if isinstance(v, float) else f"{'rejected':>16}" for v in row["perplexity"].values()]
        lines.append(f"{row['metric']:<9} {row['sparsity']:>8.2f} " + " ".join(cells))
    lines += [f"{labels[m]} = {m}" for m in methods if labels[m] != m]
    print_result(args, {"methods": methods, "rows": rows, "corpora": session.corpora},
                 f"held-out perplexity ({session.corpora['evaluation']})\n" + "\n".join(lines))
    return 0


def recipe_command(args) -> int:
    """`recipe`: an allocation (of an exported folder, a search run's best, or a method) as an llm-compressor
    recipe, its ratios in the model's module order."""
    from engine.llmcompressor_recipe import (check_modifier, llmcompressor_recipe, ordered_ratios, session_recipe,
                                             write_recipe)

    bars = ProgressBars(not args.quiet)
    refuse_existing(args.out, args.force)  # before any model is loaded
    if args.folder:
        if args.from_run:
            raise WorkbenchError("give an exported folder or --from-run, not both")
        pruning = read_recipe_file(args.folder)
        alloc, metric = pruning["allocation"], pruning["metric"]
        ratios = ordered_ratios(alloc["linear_ratios"], _module_order(Path(args.folder).expanduser()))
        what = f"{alloc['method']} at {alloc['target']:g} from {args.folder}"
        text = llmcompressor_recipe(ratios, metric, pruning.get("pattern"), title=f"dsa-workbench: {what}")
    else:
        pattern = None
        if args.from_run:
            check_modifier(run_best(args.from_run)[0].metric)  # before the model loads
            session, method, target, metric = best_of_run(args, bars)
        else:
            pattern = parse_pattern(args.pattern)
            method, metric = with_nan_policy(args.allocation, args.nan_policy), args.metric
            check_modifier(metric)  # before the model loads
            if pattern is None and args.sparsity is None:
                raise WorkbenchError("--sparsity is required (or give --pattern N:M)")
            if pattern and method != "uniform":
                raise WorkbenchError(f"--pattern {pattern} prunes every layer alike: it needs --allocation uniform")
            target = pattern.ratio if pattern else check_target(args.sparsity)
            check_plan(args, "allocations", args.model, metric=metric)
            session = open_session(args, args.model, bars)
        text, ratios = session_recipe(session, method, target, metric, str(pattern) if pattern else None, bars)
        what = f"{method} at {target:g} on {session.loaded.label}"
    out = write_recipe(text, args.out, args.force)
    values = list(ratios.values())
    print_result(args, {"out": str(out), "format": args.format, "metric": metric, "allocation": what,
                        "ratios": len(values), "min": min(values), "max": max(values)},
                 f"wrote {out}: {what}, {metric}, {len(values)} linears at {min(values):.3f}-{max(values):.3f}\n"
                 f"run it: oneshot(model=..., dataset=..., recipe=\"{out}\")")
    return 0


def report_command(args) -> int:
    """`report`: a search run as report.md and PNG figures (engine.report), on the run's model and data."""
    from engine.report import write_report
    from engine.search.start import stored_settings
    from engine.search.store import RunStore

    refuse_existing(args.out, args.force)  # before any model is loaded
    bars = ProgressBars(not args.quiet)
    settings = stored_settings(RunStore(args.run))
    check_plan(args, "allocations", settings.model, metric=settings.metric, data=settings.data)
    session = open_run_session(args, settings, bars)
    out = write_report(args.run, args.out, session, force=args.force, progress=bars)
    files = sorted(p.name for p in out.iterdir())
    print_result(args, {"out": str(out), "files": files}, f"wrote {out}: {', '.join(files)}")
    return 0


def _module_order(folder: Path) -> list[str]:
    """The module names of an exported folder's model, in its module order (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return [name for name, _ in model.named_modules()]


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise WorkbenchError(f"{flag}: {text!r} is not a number") from None
