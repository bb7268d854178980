"""`dsa-workbench search`: a headless search with a progress line, Ctrl-C to stop, --resume."""

from __future__ import annotations

import signal
import sys

from engine.allocation.units import UNITS_PER_BLOCK
from engine.errors import WorkbenchError
from engine.search import events as ev
from engine.search.control import SearchState
from engine.search.controller import SearchController
from engine.search.search import SearchSettings
from engine.search.start import search_controller, stored_settings
from engine.search.store import RunStore
from workbench.console import ProgressBars, print_result, zero_shot_lines
from workbench.event_text import event_text, fitness_text
from workbench.options import cluster_options, data_config
from workbench.preflight import check_plan


def settings_from(args) -> SearchSettings:
    """A new search's settings from the search options (`search`, `tui`), validated by the engine."""
    if args.sparsity is None:
        raise WorkbenchError("--sparsity is required for a new search")
    return SearchSettings(sparsity=args.sparsity, metric=args.metric, fitness=args.fitness, strategy=args.strategy,
                          population=args.population, generations=args.generations, seed=args.search_seed,
                          seeds=tuple(args.seed_function), stages=args.stages, level_step=args.level_step,
                          granularity=args.granularity, model=args.model, data=data_config(args),
                          tasks=args.tasks or (), limit=args.limit)


class EventPrinter:
    """One line per candidate on stderr, with the best so far; generation summaries on their own lines."""

    def __init__(self, settings: SearchSettings, quiet: bool):
        self.settings = settings
        self.quiet = quiet
        self.total: int | None = None  # the budget, once a candidate's ratios say how many blocks the model has
        self.best: ev.Candidate | None = None

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if isinstance(event, ev.NewBest):
            self.best = event.candidate
        if isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
            c = event.candidate
            if self.total is None and c.ratios:  # a profile's ratios are per unit, a function's per block
                profile = c.text.startswith("profile:")
                self.total = self.settings.budget(len(c.ratios) // UNITS_PER_BLOCK[self.settings.granularity]
                                                  if profile else len(c.ratios))
            best = f" | best {fitness_text(self.best.fitness)}" if self.best else ""
            print(event_text(event, total=self.total, note=best), file=sys.stderr, flush=True)
        elif isinstance(event, (ev.GenerationDone, ev.StageDone)):
            print(f"== {event_text(event)}", file=sys.stderr, flush=True)


def run_in_foreground(controller: SearchController, bars: ProgressBars, args, run: str, resume: str) -> int | None:
    """Run a search thread until it ends; Ctrl-C stops it after the candidate in flight, twice at once.

    Returns None when the search finished (result in `controller.result`); after a stop, reports how to
    continue (the `resume` command) and returns the exit code. Re-raises the search's error."""
    interrupts = 0

    def on_sigint(signum, frame):
        # A handler instead of KeyboardInterrupt: an interrupted Thread.join leaves the interpreter in a
        # state where torch aborts at exit.
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            bars.status("stopping after the candidate in flight (Ctrl-C again to stop now)")
        controller.stop(after_candidate=interrupts == 1)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        controller.start()
        while not controller.join(0.2):
            pass
    finally:
        signal.signal(signal.SIGINT, previous)
    if controller.error is not None:  # the state is "failed": main prints it as one line
        raise controller.error
    if controller.state == SearchState.FINISHED:
        return None
    if controller.store.exists:
        evaluated = controller.evaluated
        print_result(args, {"run": run, "stopped": True, "evaluated": evaluated},
                     f"stopped after {evaluated} candidates; continue with `{resume}`")
    else:
        print_result(args, {"run": run, "stopped": True, "evaluated": 0},
                     "stopped before the search started: nothing was written")
    return 130 if interrupts else 0


def search(args) -> int:
    if bool(args.run) == bool(args.resume):
        raise WorkbenchError("give either --run RUN for a new search or --resume RUN")
    settings = None if args.resume else settings_from(args)
    bars = ProgressBars(not args.quiet)
    run = args.resume or args.run
    active = settings or stored_settings(RunStore(run))
    printer = EventPrinter(active, args.quiet)
    check_plan(args, "search", active.model, metric=active.metric, fitness=active.fitness)
    cluster, workers = cluster_options(args)
    controller = search_controller(run, settings, dtype=args.dtype, device=args.device, device_map=args.device_map,
                                   cluster=cluster, workers=workers, on_event=printer, progress=bars,
                                   status=bars.status)
    stopped = run_in_foreground(controller, bars, args, run, f"dsa-workbench search --resume {run}")
    if stopped is not None:
        return stopped
    final = controller.result
    result = {"run": run, "best": final.best.text if final.best else None,
              "fitness": final.best.fitness if final.best else None, "held_out_perplexity": final.held_out,
              "zero_shot": final.zero_shot}
    lines = [f"best function: {result['best']}  (fitness {result['fitness']})",
             "held-out perplexity: " + ", ".join(f"{k}: {v:.3f}" for k, v in final.held_out.items())]
    other = final.second_corpus
    if other:
        result["second_corpus"] = other
        lines.append(f"on {other['corpus']} (another domain): " + (other["error"] if "error" in other else ", ".join(
            f"{k}: {v:.3f}" for k, v in other["held_out_perplexity"].items())))
    lines += [line for method, scores in final.zero_shot.items()
              for line in zero_shot_lines(scores, f" ({'best' if method == result['best'] else method})")]
    print_result(args, result, "\n".join(lines))
    return 0
