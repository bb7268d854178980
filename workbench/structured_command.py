"""`dsa-workbench structured build-db | search | export`: DarwinLM-style structured pruning, headless."""

from __future__ import annotations

import sys

from engine.errors import WorkbenchError
from engine.saving import folder_bytes
from engine.search import events as ev
from engine.structured.export import export_structure
from engine.structured.run import RunSource, StructuredRun, build_run_database, open_workspace, structured_controller
from engine.structured.search import StructuredSettings
from engine.structured.structure import Structure, uniform
from workbench.console import ProgressBars, print_result
from workbench.event_text import event_text
from workbench.options import cluster_options, data_config
from workbench.preflight import check_plan
from workbench.search_command import run_in_foreground


def structured(args) -> int:
    return {"build-db": build_db, "search": search, "export": export}[args.step](args)


def build_db(args) -> int:
    bars = ProgressBars(not args.quiet)
    source = RunSource(args.model, data_config(args), args.mlp_levels)
    check_plan(args, "structured", args.model)
    db = build_run_database(args.run, source, dtype=args.dtype, device=args.device, progress=bars,
                            status=bars.status)
    size = folder_bytes(db.folder)
    shapes = db.shapes
    print_result(args, {"run": args.run, "db": str(db.folder), "bytes": size, "blocks": shapes.layers,
                        "attention_levels": shapes.heads + 1, "mlp_levels": shapes.mlp_levels + 1},
                 f"level database ready: {db.folder} ({size / 2**20:.0f} MiB, {shapes.layers} blocks, "
                 f"{shapes.heads + 1} attention and {shapes.mlp_levels + 1} MLP levels each)")
    return 0


class StructuredPrinter:
    """A line per candidate (with the share of the model it keeps) and per stage on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
            kept = f" | kept {sum(event.candidate.ratios) / max(1, len(event.candidate.ratios)):.3f}" \
                if event.candidate.scored else ""
            print(event_text(event, kl=True, note=kept), file=sys.stderr, flush=True)
        elif isinstance(event, ev.StageDone):
            print(f"== {event_text(event, kl=True)}", file=sys.stderr, flush=True)


def search(args) -> int:
    bars = ProgressBars(not args.quiet)
    settings = None
    if not args.resume:
        if args.target_params is None:
            raise WorkbenchError("--target-params is required for a new search (or --resume)")
        settings = StructuredSettings(target=args.target_params, generations=args.generations,
                                      offspring=args.offspring, stages=args.stages,
                                      one_shot=args.one_shot, lr=args.lr, seed=args.search_seed)
    source = StructuredRun(args.run).source()
    check_plan(args, "structured", source.model, data=source.data)
    cluster, workers = cluster_options(args)
    controller = structured_controller(args.run, settings, on_event=StructuredPrinter(args.quiet), dtype=args.dtype,
                                       device=args.device, cluster=cluster, workers=workers, progress=bars,
                                       status=bars.status)
    stopped = run_in_foreground(controller, bars, args, args.run,
                                f"dsa-workbench structured search --run {args.run} --resume")
    if stopped is not None:
        return stopped
    final = controller.result
    if final.best is None:
        raise WorkbenchError(f"every candidate of the search in {args.run} was rejected: see its candidates.jsonl")
    result = {"run": args.run, "best": final.best.text, "kl": final.best.fitness,
              "held_out_perplexity": final.held_out}
    lines = [f"best structure: {final.best.text}  (KL {final.best.fitness:.5f})",
             "held-out perplexity without fine-tune: " + ", ".join(f"{k} {v:.3f}" for k, v in final.held_out.items())]
    print_result(args, result, "\n".join(lines))
    return 0


def export(args) -> int:
    bars = ProgressBars(not args.quiet)
    if args.finetune_tokens < 0:
        raise WorkbenchError(f"--finetune-tokens must be >= 0 (got {args.finetune_tokens})")
    run = StructuredRun(args.run)
    source = run.source()
    check_plan(args, "structured", source.model, data=source.data)
    workspace = open_workspace(args.run, lr=args.lr, dtype=args.dtype, device=args.device, progress=bars,
                               status=bars.status)
    if args.structure:
        structure = Structure.parse(args.structure, workspace.shapes)
    elif args.uniform is not None:
        structure = uniform(workspace.shapes, args.uniform)
    else:
        best = (run.store.load_state(repair=False) or {}).get("best") if run.store.exists else None
        if best is None:
            raise WorkbenchError(f"run {args.run} has no searched structure yet: run `structured search`, "
                                 "or give --structure or --uniform")
        structure = Structure.parse(best["text"], workspace.shapes)
    done = export_structure(workspace, structure, args.out, finetune_tokens=args.finetune_tokens, force=args.force,
                            evaluate=not args.no_eval, verify=not args.no_verify, progress=bars)
    size = folder_bytes(done.path)
    result = {"out": str(done.path), "structure": str(structure), "params": done.params,
              "dense_params": done.dense_params, "perplexity": done.perplexity, "bytes": size}
    text = (f"wrote {done.path}: {done.params / 1e6:.1f}M parameters (dense {done.dense_params / 1e6:.1f}M), "
            f"{size / 2**20:.0f} MiB")
    if done.perplexity is not None:
        text += f"\nheld-out perplexity: {done.perplexity:.3f}"
    print_result(args, result, text)
    return 0
