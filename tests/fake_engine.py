"""A fake engine API for TUI tests: same calls as workbench.engine_api.EngineAPI, without a model.

Allocations are computed by the real engine on synthetic block samples. The searches are the real
ones (controller, lifecycle, loop, run folder in a temporary directory) with stand-in scores, so
their events come in the engine's own order and at its own moments."""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import replace
import time
import weakref
import zlib
from pathlib import Path

import torch

from engine.allocation import AllocationFunction
from engine.allocation.profiles import profile_text
from engine.allocation.samples import BlockSample
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.search.controller import SearchController
from engine.search.core import attempt
from engine.search.search import Search, SearchSettings
from engine.search.store import RunStore
from engine.structured.search import StructuredSearch
from engine.structured.structure import Shapes
from workbench.contract import AllocationView, ModelInfo, StructuredInfo
from workbench.engine_api import EngineAPI, user_errors

N_BLOCKS = 12


def _samples():
    gen = torch.Generator().manual_seed(0)
    return [BlockSample(torch.randn(32, 16, generator=gen, dtype=torch.float64).abs() * (1 + 0.1 * b), 10_000)
            for b in range(N_BLOCKS)]


def user_error(text: str) -> ValueError:
    """A user error as the engine API hands it on (engine_api.user_errors): a ValueError from a WorkbenchError."""
    error = ValueError(text)
    error.__cause__ = WorkbenchError(text)
    return error


class SlowScores:
    """Stands in for the model: `seconds` per candidate, checking the control like forward batches do."""

    workers = 1

    def __init__(self, seconds: float, samples):
        self.seconds = seconds
        self.samples = samples

    def wait(self, check) -> None:
        end = time.monotonic() + self.seconds
        while True:
            check()
            if time.monotonic() >= end:
                return
            time.sleep(0.005)

    @staticmethod
    def block_ratios(text) -> tuple[float, ...]:
        h = zlib.crc32(text.encode())
        return tuple(0.7 + 0.01 * ((h >> b) % 5 - 2) for b in range(N_BLOCKS))

    def ratios(self, texts):
        return [self.block_ratios(t) for t in texts]

    def unit_params(self, granularity):
        return [10_000] * N_BLOCKS

    def profiles(self, texts, granularity):
        return [profile_text(self.block_ratios(t)) for t in texts]

    def distilled(self, methods):
        return []  # no simple allocation to start from: the first population is random, as before

    def evaluate(self, texts, check, stage=0):
        def score(text):
            self.wait(check)
            return 10 + zlib.crc32(text.encode()) % 90, self.block_ratios(text)
        return [attempt(lambda: score(t)) for t in texts]

    def structured(self, text, stage, check) -> float:
        self.wait(check)
        if zlib.crc32(text.encode()) % 4 == 0:
            return float("nan")  # a fine-tune that diverged: the engine rejects the candidate
        levels = [int(x) for x in text.split("/")[0].split()[1:]]
        return 0.01 * (1 + sum((b + 1) * a for b, a in enumerate(levels)) % 17) + 0.001 * stage


class StructuredScores:
    """The structured search's evaluator over SlowScores."""

    workers = 1

    def __init__(self, scores: SlowScores):
        self.scores = scores

    def evaluate(self, texts, check, stage):
        return [attempt(lambda: (self.scores.structured(t, stage, check), ())) for t in texts]

    def held_out(self, texts, check, corpus=None):
        return {"uniform": 90.0, "searched": 80.0}


# per linear of every block: block, group (0 attention, 1 MLP), size (576 hidden, 3 of 9 heads for k and v, 1536 MLP)
LAYOUT = tuple((b, g, size) for b in range(N_BLOCKS) for g, size in
               ((0, 576 * 576), (0, 192 * 576), (0, 192 * 576), (0, 576 * 576), (1, 1536 * 576), (1, 1536 * 576),
                (1, 576 * 1536)))
SHAPES = Shapes(layers=N_BLOCKS, hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, mlp_levels=10)


class FakeAPI(EngineAPI):
    """palette/parse/format are the real ones; everything that would touch a model is scripted."""

    def __init__(self, load_error: str | None = None, candidate_seconds: float = 0.02):
        self.load_error = load_error
        self.candidate_seconds = candidate_seconds
        self.samples = _samples()
        self.calls: list[tuple] = []
        self.export_released = threading.Event()  # an export to "held" ends once this is set
        self.controller: SearchController | None = None
        self.searches: list[SearchController] = []
        self.folder = Path(tempfile.mkdtemp(prefix="fake-runs-"))  # run folders land here, removed with the API
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        self.model_source, self.data = None, DataConfig()  # what search_settings gives a search

    def load(self, status, progress=lambda *a: None):
        status("loading fake model")
        if self.load_error:
            raise user_error(self.load_error)
        return ModelInfo("fake-llama", "cpu", "float32", N_BLOCKS, LAYOUT)

    def allocation(self, method, sparsity, metric):
        self.calls.append(("allocation", method, sparsity, metric))
        if method in ("uniform", "owl"):
            ratios = tuple(sparsity + (0.02 * (b % 3 - 1) if method == "owl" else 0) for b in range(N_BLOCKS))
            return AllocationView(method, sparsity, ratios)
        try:
            f = AllocationFunction.parse(method)
            ratios, values = f.block_ratios(self.samples, [1] * N_BLOCKS, sparsity)
        except WorkbenchError as exc:
            raise ValueError(str(exc)) from exc
        return AllocationView(str(f), sparsity, tuple(ratios), tuple(values))

    def importance(self, metric):
        return {"mean score": tuple(float(s.matrix.mean()) for s in self.samples),
                "outliers": tuple(0.01 * (b % 4) for b in range(N_BLOCKS))}

    def fitness(self, text, sparsity, metric):
        self.calls.append(("fitness", text))
        view = self.allocation(text, sparsity, metric)
        return 123.456, view

    DISTILLED = "abslog | var | atan | lam=0.2"

    def distill(self, profile, sparsity, metric):
        self.calls.append(("distill", profile))
        return self.DISTILLED, 0.012

    def held_out(self, method, sparsity, metric, tasks=(), limit=None, progress=lambda *a: None):
        """Perplexity, then each task's requests in two halves (as the engine reports them), then the scores."""
        self.calls.append(("held_out", method, tuple(tasks)))
        if method == "dsa":
            raise user_error("op 'asin' produced NaN at block 0")
        scores = {}
        for task in tasks:
            progress(f"zero-shot {task}", 32, 64)
            progress(f"zero-shot {task}", 64, 64)
            failed = task == "arc_easy"
            scores[task] = {"task": task, "accuracy": None if failed else 0.625, "normalized": None, "samples": 16,
                            "seconds": 0.1, "error": "Couldn't reach 'allenai/ai2_arc' on the Hub" if failed else None}
        return {"uniform": 501.0, "owl": 480.0}.get(method, 450.0), scores

    @user_errors
    def start_search(self, settings, options, seeds, on_event, status, progress=lambda *a: None):
        """The real controller and search loop (so the events come in the engine's order) over fast scores."""
        self.calls.append(("start_search", settings, options, tuple(seeds)))
        self._one_search_at_a_time()
        store = RunStore(self.folder / options.run)
        if options.resume:
            settings = SearchSettings.from_json(store.settings())
        else:
            settings = replace(settings, population=min(settings.population, 4), seeds=tuple(seeds),
                               generations=min(settings.generations, 3),
                               stages="auto" if settings.stages_are_auto else settings.stages)
            store.check_new()
        scores = SlowScores(self.candidate_seconds, self.samples)

        def prepare(control):
            scores.wait(control.checkpoint)
            return Search(settings, store, scores, held_out=lambda methods, check, corpus=None: {m: 500.0 for m in methods},
                          on_event=on_event)

        self.controller = self._started(SearchController(prepare, store, on_event, settings))
        return self.controller

    @user_errors
    def start_structured(self, run, settings, on_event, status, progress=lambda *a: None):
        self.calls.append(("start_structured", run, settings))
        self._one_search_at_a_time()
        settings = replace(settings, generations=min(settings.generations, 2), offspring=min(settings.offspring, 3))
        stages = settings.stages
        store = RunStore(self.folder / run, "structured", shared=True)
        scores = SlowScores(self.candidate_seconds, self.samples)
        fractions = lambda s: tuple(1 - (a / 9 + m / 10) / 2 for a, m in zip(s.attn, s.mlp))  # noqa: E731

        def prepare(control):
            status("level database: 1/1")
            scores.wait(control.checkpoint)
            return StructuredSearch(settings, SHAPES, store, StructuredScores(scores), fractions=fractions,
                                    on_event=on_event)

        self.structured = self._started(SearchController(prepare, store, on_event))
        info = StructuredInfo(run, 9, 10, settings.offspring,
                              [(st.survivors, settings.finetune_tokens(i), st.fitness_tokens)
                               for i, st in enumerate(stages)], "new search")
        return self.structured, info

    def export_structured(self, run, out, finetune_tokens, lr, force, progress):
        self.calls.append(("export_structured", run, out, finetune_tokens, force))
        progress("fine-tune", 1, 1)
        return out

    def export(self, method, sparsity, metric, out, sparse_format, dtype, force, progress):
        self.calls.append(("export", method, out, sparse_format, dtype, force))
        for i in range(3):
            progress("pruning", i + 1, 3)
        if out == "exists":
            raise user_error("output exists already exists (use --force to replace it)")
        if out == "full-disk":  # not a user error: what the engine does not foresee
            raise OSError(28, "No space left on device\nwhile writing model-00001.safetensors")
        if out == "slow":
            time.sleep(0.5)
        if out == "held":
            self.export_released.wait(60)  # bounded, should a test fail before setting it
        return out

    def report(self, run, out):
        self.calls.append(("report", run, out))
        if run == "empty":
            raise user_error(f"run {run} has no scored candidate yet: run the search first")
        return out

    def memory(self):
        return "model 1 MiB + caches 1 MiB"
