"""A fake engine API for TUI tests: same calls as workbench.engine_api.EngineAPI, instant and scripted.

Allocations are computed by the real engine on synthetic block samples (no model), and the search
emits real engine event objects from a background thread, paced by a real Control."""

from __future__ import annotations

import math
import threading
import time

import torch

from engine.allocation import AllocationFunction
from engine.allocation.samples import BlockSample
from engine.errors import WorkbenchError
from engine.search import events as ev
from engine.search.control import Control, SearchStopped
from screens.messages import AllocationView
from workbench.engine_api import EngineAPI, ModelInfo

N_BLOCKS = 12


def _samples():
    gen = torch.Generator().manual_seed(0)
    return [BlockSample(torch.randn(32, 16, generator=gen, dtype=torch.float64).abs() * (1 + 0.1 * b), 10_000)
            for b in range(N_BLOCKS)]


class FakeController:
    def __init__(self, on_event, population: int, generations: int, seconds: float):
        self.control = Control()
        self.on_event = on_event
        self.population = population
        self.generations = generations
        self.seconds = seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        index = 0
        try:
            for g in range(self.generations):
                fits = []
                for i in range(self.population):
                    text = f"abs | mean | no_op | lam={round(0.01 * (index + 1), 2)}"
                    self.on_event(ev.CandidateStarted(index, g, text))
                    end = time.monotonic() + self.seconds
                    while time.monotonic() < end:
                        self.control.checkpoint()
                        time.sleep(0.005)
                    fitness = 100.0 / (1 + index) + 10
                    ratios = tuple(0.7 + 0.01 * math.sin(b + index) for b in range(N_BLOCKS))
                    cand = ev.Candidate(index, g, text, fitness, ratios, self.seconds)
                    self.on_event(ev.NewBest(cand))
                    self.on_event(ev.CandidateScored(cand))
                    fits.append(fitness)
                    index += 1
                    self.control.candidate_done()
                self.on_event(ev.GenerationDone(g, min(fits), sorted(fits)[len(fits) // 2], len(fits), 0))
            self.on_event(ev.SearchFinished(None, {"uniform": 500.0, "owl": 480.0}))
        except SearchStopped:
            self.on_event(ev.SearchStoppedEvent(index))

    def pause(self):
        self.control.pause()

    def resume(self):
        self.control.resume()

    def step(self):
        self.control.step()

    def stop(self, after_candidate=False):
        self.control.stop(after_candidate)

    @property
    def running(self):
        return self._thread.is_alive()

    def join(self, timeout):
        self._thread.join(timeout)
        return not self._thread.is_alive()


class FakeAPI(EngineAPI):
    """palette/parse/format are the real ones; everything that would touch a model is scripted."""

    def __init__(self, load_error: str | None = None, candidate_seconds: float = 0.02):
        self.load_error = load_error
        self.candidate_seconds = candidate_seconds
        self.samples = _samples()
        self.calls: list[tuple] = []
        self.controller: FakeController | None = None

    def load(self, status):
        status("loading fake model")
        if self.load_error:
            raise ValueError(self.load_error)
        return ModelInfo("fake-llama", "cpu", "float32", N_BLOCKS)

    def allocation(self, method, sparsity, metric, status=lambda m: None):
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

    def fitness(self, text, sparsity, metric):
        self.calls.append(("fitness", text))
        view = self.allocation(text, sparsity, metric)
        return 123.456, view

    def held_out(self, method, sparsity, metric):
        self.calls.append(("held_out", method))
        if method == "dsa":
            raise ValueError("op 'asin' produced NaN at block 0")
        return {"uniform": 501.0, "owl": 480.0}.get(method, 450.0)

    def start_search(self, params, seeds, on_event, status):
        self.calls.append(("start_search", params, tuple(seeds)))
        self.controller = FakeController(on_event, min(params.population, 4), min(params.generations, 3),
                                         self.candidate_seconds)
        return self.controller

    def export(self, method, sparsity, metric, out, sparse_format, dtype, force, progress):
        self.calls.append(("export", method, out, sparse_format, dtype, force))
        for i in range(3):
            progress("pruning", i + 1, 3)
        if out == "exists":
            raise ValueError("output exists already exists (use --force to replace it)")
        return out

    def memory(self):
        return "model 1 MiB + caches 1 MiB"
