"""Search events as one line of text each: the CLI prints these lines, the TUI shows them on its status lines.

Candidates, generations and stages are counted from 1, as a user counts them."""

from __future__ import annotations

from engine.search import events as ev
from engine.search.control import SearchState


def fitness_text(value: float | None, kl: bool = False) -> str:
    """A fitness as the searches show it: perplexity (DSA) or KL to the dense model (structured)."""
    if value is None:
        return "-"
    return f"KL {value:.5f}" if kl else f"{value:.3f}"


def event_text(event, *, kl: bool = False, total: int | None = None, note: str = "") -> str | None:
    """The line for a search event; None for events that have none. `kl`: fitnesses are KL (the structured
    search); `total`: the search's candidate budget, shown next to a candidate's number where known; `note`:
    more about a candidate, put before its text."""
    if isinstance(event, (ev.CandidateScored, ev.CandidateRejected)):
        c = event.candidate
        what = fitness_text(c.fitness, kl) if c.scored else f"rejected: {c.reason}"
        if c.duplicate_of is not None:
            what += f" (same allocation as #{c.duplicate_of + 1})"
        number = f"{c.index + 1}/{total}" if total else f"{c.index + 1}"
        return (f"candidate {number} (generation {c.generation + 1}, stage {c.stage + 1}, {c.seconds:.1f} s): "
                f"{what}{note} | {c.text}")
    if isinstance(event, ev.CandidateStarted):
        return f"evaluating candidate {event.index + 1} (generation {event.generation + 1}): {event.text}"
    if isinstance(event, ev.NewBest):
        return f"new best {fitness_text(event.candidate.fitness, kl)}: {event.candidate.text}"
    if isinstance(event, ev.StageDone):
        tokens = (f"{event.finetune_tokens} fine-tune / " if event.finetune_tokens else "") + \
            f"{event.fitness_tokens} fitness tokens"
        return (f"generation {event.generation + 1}, stage {event.stage + 1} done: {event.scored} scored -> "
                f"{event.survivors} go on ({tokens}), best {fitness_text(event.best, kl)}")
    if isinstance(event, ev.GenerationDone):
        return (f"generation {event.generation + 1} done: best {fitness_text(event.best, kl)}, median "
                f"{fitness_text(event.median, kl)}, {event.scored} scored, {event.rejected} rejected")
    if isinstance(event, ev.WorkersChanged):
        starting = f", {event.starting} starting" if event.starting else ""
        return f"workers {event.total} ({event.busy} busy, {event.failed} failed{starting})"
    if isinstance(event, ev.StateChanged):
        state = SearchState(event.state)
        if state == SearchState.STOPPED:
            return (f"stopped after {event.evaluated} candidates; s resumes from the checkpoint"
                    if event.resumable else "stopped before the search started; nothing was written")
        if state == SearchState.FAILED:
            return f"failed: {event.message}"
        return None  # the other states are on the status line already
    if isinstance(event, ev.SearchFinished):
        held = ", ".join(f"{k}: {v:.2f}" for k, v in event.held_out.items())
        text = f"finished; held-out perplexity{' without fine-tune' if kl else ''}: {held}"
        other = event.second_corpus
        if other:
            text += f"; on {other['corpus']}: " + (other["error"] if "error" in other else ", ".join(
                f"{k}: {v:.2f}" for k, v in other["held_out_perplexity"].items()))
        return text
    return None
