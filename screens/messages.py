"""Messages between the workbench layer and the panes: requests go up, results come back down.

Panes never run engine work themselves: they post a *Requested message, the App runs the work in
a thread worker and posts the past-tense result."""

from __future__ import annotations

from textual.message import Message

from workbench.contract import AllocationView, ScoredCandidate


class PreviewRequested(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class PreviewReady(Message):
    """A function's ratios (or why it has none) at `target`: the (sparsity, metric) they were computed for."""

    def __init__(self, text: str, view: AllocationView | None, error: str | None, target: tuple) -> None:
        super().__init__()
        self.text = text
        self.view = view
        self.error = error
        self.target = target


class EvaluateRequested(Message):
    """Score a function on the fitness split and add it to the leaderboard."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class SeedRequested(Message):
    """Put a function into the next search's first population."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class CompareRequested(Message):
    """Held-out perplexity of one allocation method or function text."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method


class CompareDone(Message):
    """A compare row's scores at `target`: the (sparsity, metric) they were computed for."""

    def __init__(self, method: str, perplexity: float | None, error: str | None, zero_shot: dict | None,
                 target: tuple) -> None:
        super().__init__()
        self.method = method
        self.perplexity = perplexity
        self.error = error
        self.zero_shot = zero_shot or {}  # task -> engine.zeroshot.TaskScore as JSON
        self.target = target


class CompareProgressed(Message):
    """Zero-shot scoring of a compare row under way: `done` of `total` requests of `task`."""

    def __init__(self, method: str, task: str, done: int, total: int) -> None:
        super().__init__()
        self.method = method
        self.task = task
        self.done = done
        self.total = total


class CandidateSelected(Message):
    """A leaderboard row was chosen: show its ratios on the dashboard."""

    def __init__(self, candidate: ScoredCandidate) -> None:
        super().__init__()
        self.candidate = candidate


class ExportRequested(Message):
    def __init__(self, method: str, out: str, format: str, dtype: str, force: bool) -> None:
        super().__init__()
        self.method = method
        self.out = out
        self.format = format
        self.dtype = dtype
        self.force = force


class ExportProgressed(Message):
    def __init__(self, stage: str, done: int, total: int) -> None:
        super().__init__()
        self.stage = stage
        self.done = done
        self.total = total


class ExportDone(Message):
    def __init__(self, path: str | None, error: str | None) -> None:
        super().__init__()
        self.path = path
        self.error = error


class StructuredStartRequested(Message):
    """Build the level database if needed, then start the structured search with `settings` (the engine's
    StructuredSettings), or resume the one stored in `run`."""

    def __init__(self, run: str, settings) -> None:
        super().__init__()
        self.run = run
        self.settings = settings


class StructuredExportRequested(Message):
    """Write the smaller model of the run's best structure."""

    def __init__(self, run: str, settings, out: str, finetune_tokens: int, force: bool) -> None:
        super().__init__()
        self.run = run
        self.settings = settings
        self.out = out
        self.finetune_tokens = finetune_tokens
        self.force = force
