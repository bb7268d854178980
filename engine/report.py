"""A search run as a report to share: report.md beside PNG figures (matplotlib), readable in black and white.

fitness.png: the best and median fitness of each generation, and the best so far against candidates scored.
sparsity.png: the best allocation's per-block sparsity (attention and MLP apart for a group profile) against
uniform, OWL, AlphaPruning, ATP, DLP and protect-first on the run's model. report.md: the settings, the final
table (held-out perplexity and KL to the dense model there, measured here; the second corpus's perplexity and
zero-shot accuracy from the run's final.json)
and the commands and versions that reproduce it. Written to a temporary folder, then renamed (engine.saving).
"""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from engine.corpus import DEFAULT_CORPUS_LABEL
from engine.errors import WorkbenchError
from engine.loading import DEFAULT_MODEL_LABEL
from engine.progress import Progress, no_progress
from engine.saving import atomic_folder, refuse_existing
from engine.search.events import Candidate

REPORT_BASELINES = ("uniform", "owl", "alpha", "atp", "dlp", "first")
KL_TOKENS = 8192  # KL to the dense model on at most this many held-out tokens (its reference holds their log-probs)
# one style per series, told apart by line and marker without colour
STYLES = [dict(color="black", linestyle="-", marker="o", linewidth=2.2, markersize=4)] + [
    dict(color=grey, linestyle=line, marker=marker, linewidth=1.2, markersize=3)
    for grey, line, marker in (("0.45", "--", "s"), ("0.3", ":", "^"), ("0.55", "-.", "v"), ("0.2", "--", "D"),
                               ("0.6", ":", "x"), ("0.35", "-.", "+"), ("0.5", "-", "*"))]


def write_report(run: str | Path, out: str | Path, session, *, force: bool = False,
                 progress: Progress = no_progress) -> Path:
    """report.md, fitness.png and sparsity.png of the search in `run`, with `session` on the run's model and data."""
    from engine.search.start import stored_settings
    from engine.search.store import RunStore

    store = RunStore(run)
    if not store.exists:
        raise WorkbenchError(f"no search run in {run}")
    settings, final = stored_settings(store), store.final() or {}
    if (session.loaded.source, session.data) != (settings.model, settings.data):
        raise WorkbenchError(f"run {run} was made on another model or data than the one loaded: report it with "
                             f"`dsa-workbench report {run}`, which loads the run's own")
    state = store.load_state(repair=False) or {}
    log = store.candidates()[:state.get("logged")]  # up to the checkpoint, as export --from-run sees the run
    scored = [c for c in log if c.scored and c.stage == len(settings.stage_keep)]
    if not scored:
        raise WorkbenchError(f"run {run} has no scored candidate yet: run the search first")
    best = Candidate.from_json(state["best"]) if state.get("best") else min(scored, key=lambda c: c.fitness)
    out = refuse_existing(out, force)
    if out.exists() and (not out.is_dir() or out.resolve() in (store.folder.resolve(), *store.folder.resolve().parents)):
        raise WorkbenchError(f"output {out} is a file or holds the run itself: name another report folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        _fitness_figure(scored, settings.fitness, tmp / "fitness.png")
        allocations, missing = {}, {}
        with session.lock:  # a search may be scoring candidates on the same session
            for method in (best.text, *REPORT_BASELINES):
                try:
                    allocations[method] = session.allocate(method, settings.sparsity, settings.metric,
                                                           progress=progress)
                except WorkbenchError as exc:  # a baseline that cannot reach this target: left out, said why
                    missing[method] = str(exc)
        if best.text in missing:
            raise WorkbenchError(f"the best of run {run} cannot be applied: {missing[best.text]}")
        methods = list(allocations)
        kl_tokens = min(settings.data.eval_tokens or KL_TOKENS, KL_TOKENS)
        _sparsity_figure(allocations, best.text, tmp / "sparsity.png")
        held, kl = {}, {}
        for i, method in enumerate(methods):
            progress("held-out perplexity and KL", i, len(methods))
            with session.lock:
                try:
                    session.prune(allocations[method], settings.metric)
                    held[method], kl[method] = session.perplexity(), session.kl("evaluation", tokens=kl_tokens)
                finally:  # the session (the TUI's too) stays dense whatever happens
                    session.restore()
        (tmp / "report.md").write_text(_markdown(store.folder, settings, best, final, held, kl, allocations,
                                                 missing, kl_tokens))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fitness_figure(scored, fitness: str, path: Path) -> None:
    plt = _pyplot()
    label = "perplexity on the fitness split" if fitness == "ppl" else "KL to the dense model (fitness split)"
    by_generation: dict[int, list[float]] = {}
    for c in scored:
        by_generation.setdefault(c.generation, []).append(c.fitness)
    generations = sorted(by_generation)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot([g + 1 for g in generations], [min(by_generation[g]) for g in generations], label="best", **STYLES[0])
    left.plot([g + 1 for g in generations], [statistics.median(by_generation[g]) for g in generations],
              label="median", **STYLES[1])
    left.set(xlabel="generation", ylabel=label, title="each generation")
    so_far, best = [], float("inf")
    for c in sorted(scored, key=lambda c: c.index):
        best = min(best, c.fitness)
        so_far.append((c.index + 1, best))
    right.step(*zip(*so_far), where="post", label="best so far", **{k: v for k, v in STYLES[0].items() if k != "marker"})
    right.set(xlabel="candidates evaluated", ylabel=label, title="anytime: the best so far")
    values = [c.fitness for c in scored]
    for ax in (left, right):
        if fitness == "ppl" and max(values) > 10 * min(values):  # a log scale only where it spans decades
            ax.set_yscale("log")
        ax.grid(True, color="0.85")
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _sparsity_figure(allocations: dict, best: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    blocks = range(len(allocations[best].block_ratios))
    for style, (method, alloc) in zip(STYLES, allocations.items()):
        name = "best" if method == best else method
        ax.plot(blocks, alloc.block_ratios, label=name, **style)
    units = allocations[best].unit_ratios
    if units and len(units) == 2 * len(blocks):  # a group profile: attention and MLP of each block
        ax.plot(blocks, units[0::2], label="best: attention", color="black", linestyle="none", marker="^",
                markersize=6, markerfacecolor="white")
        ax.plot(blocks, units[1::2], label="best: MLP", color="black", linestyle="none", marker="v", markersize=6)
    ax.set(xlabel="block", ylabel="sparsity", title="per-block sparsity")
    ax.grid(True, color="0.85")
    ax.legend(frameon=False, ncol=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown(folder: Path, settings, best, final: dict, held: dict, kl: dict, allocations: dict, missing: dict,
              kl_tokens: int) -> str:
    from engine.recipe import versions

    other = final.get("second_corpus", {})
    zero_shot = final.get("zero_shot", {})
    tasks = sorted({t for scores in zero_shot.values() for t in scores})
    head = ["allocation", "held-out perplexity"] + ([f"{other['corpus']} perplexity"] if "held_out_perplexity" in
                                                     other else []) + [f"{t} accuracy" for t in tasks] + [
        f"KL to dense (first {kl_tokens:,} held-out tokens)"]
    rows = []
    for method in kl:
        cells = ["best (above)" if method == best.text else f"`{method}`", _number(held.get(method))]
        if "held_out_perplexity" in other:
            cells.append(_number(other["held_out_perplexity"].get(method)))
        cells += [_accuracy(zero_shot.get(method, {}).get(t)) for t in tasks]
        rows.append(cells + [f"{kl[method]:.4f}"])
    d = settings.data
    lines = [f"# Search report: {folder.name}", "",
             f"Model: {settings.model or f'the default model ({DEFAULT_MODEL_LABEL})'}; {settings.metric} at "
             f"{settings.sparsity:g} mean sparsity; strategy {settings.strategy} ({settings.granularity}), "
             f"population {settings.population}, {settings.generations} generations, seed {settings.seed}, fitness "
             f"{settings.fitness}, stages {settings.stages_text or 'none'}.",
             f"Data: corpus {d.corpus or DEFAULT_CORPUS_LABEL}, seqlen {d.seqlen}, {d.calib_tokens} calibration, "
             f"{d.fitness_tokens} fitness and {d.eval_tokens or 'all'} held-out tokens, seed {d.seed}.", "",
             f"Best (fitness {best.fitness:.4g}, candidate {best.index + 1}, generation {best.generation + 1}):", "",
             f"    {best.text}", ""]
    if "fitness_to_held_out" in final:
        lines += [f"Held-out over fitness perplexity of the best: {final['fitness_to_held_out']:.3f}.", ""]
    if not final:
        lines += ["The search has not finished: the second corpus and zero-shot columns come with its end.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += [f"\n`{method}` is left out: {reason}" for method, reason in missing.items()]
    lines += ["", "![fitness per generation and the best so far](fitness.png)", "",
              "![per-block sparsity of the best and of the baselines](sparsity.png)", "",
              "Per-block sparsity:", "", "| allocation | " + " | ".join(str(b) for b in
                                                                        range(len(allocations[best.text].block_ratios)))
              + " |", "|" + "---|" * (1 + len(allocations[best.text].block_ratios))]
    lines += [f"| {'best' if m == best.text else m} | " + " | ".join(f"{r:.3f}" for r in a.block_ratios) + " |"
              for m, a in allocations.items()]
    lines += ["", "Reproduce:", "", "```bash",
              _search_command(settings) + "   # the same search anew",
              f"dsa-workbench search --resume {folder}            # continue this run",
              f"dsa-workbench export --from-run {folder} --out pruned",
              f"dsa-workbench recipe --from-run {folder} --out recipe.yaml",
              f"dsa-workbench report {folder} --out {folder.name}-report", "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), ""]
    return "\n".join(lines)


def _search_command(settings) -> str:
    """The `search` command line of a run's settings (the first population's extra functions included)."""
    d = settings.data
    parts = ["dsa-workbench search --run NEW", f"--sparsity {settings.sparsity:g}", f"--metric {settings.metric}",
             f"--fitness {settings.fitness}", f"--strategy {settings.strategy}", f"--population {settings.population}",
             f"--generations {settings.generations}", f"--search-seed {settings.seed}",
             f"--stages {shlex.quote(settings.stages_text)}", f"--level-step {settings.level_step:g}",
             f"--granularity {settings.granularity}", f"--seed {d.seed}", f"--seqlen {d.seqlen}",
             f"--calib-tokens {d.calib_tokens}", f"--fitness-tokens {d.fitness_tokens}",
             f"--eval-tokens {d.eval_tokens or 'all'}", f"--batch-size {d.batch_size}",
             f"--calib-sampling {d.calib_sampling}"]
    parts += [f"--model {shlex.quote(str(settings.model))}"] if settings.model else []
    parts += [f"--corpus {shlex.quote(d.corpus)}"] if d.corpus else []
    parts += [f"--eval-corpus {shlex.quote(d.eval_corpus)}"] if d.eval_corpus else []
    parts += [f"--seed-function {shlex.quote(f)}" for f in settings.seeds]
    parts += [f"--tasks {','.join(settings.tasks)}"] if settings.tasks else []
    parts += [f"--limit {settings.limit}"] if settings.limit else []
    return " ".join(parts)


def _number(value) -> str:
    """A perplexity (or the reason there is none, as final.json gives it)."""
    return "" if value is None else f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _accuracy(score: dict | None) -> str:
    """A zero-shot task's score (engine.zeroshot.TaskScore as JSON) as a percentage."""
    if score is None:
        return ""
    if score.get("error"):
        return "failed"
    return "" if score.get("accuracy") is None else f"{100 * score['accuracy']:.1f}%"
