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
from engine.structured.search import parse_stages
from workbench.engine_api import EngineAPI, ModelInfo, StructuredInfo

N_BLOCKS = 12


def _samples():
    gen = torch.Generator().manual_seed(0)
    return [BlockSample(torch.randn(32, 16, generator=gen, dtype=torch.float64).abs() * (1 + 0.1 * b), 10_000)
            for b in range(N_BLOCKS)]


class FakeController:
    """Runs `script(controller)` in a thread; the script calls `wait()` once per candidate."""

    def __init__(self, on_event, script, seconds: float):
        self.control = Control()
        self.on_event = on_event
        self.script = script
        self.seconds = seconds
        self.evaluated = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def wait(self):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            self.control.checkpoint()
            time.sleep(0.005)

    def _run(self):
        try:
            self.script(self)
        except SearchStopped:
            self.on_event(ev.SearchStoppedEvent(self.evaluated))

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


def dsa_script(population: int, generations: int):
    def script(c: FakeController):
        for g in range(generations):
            fits = []
            for i in range(population):
                index = c.evaluated
                text = f"abs | mean | no_op | lam={round(0.01 * (index + 1), 2)}"
                c.on_event(ev.CandidateStarted(index, g, text))
                c.wait()
                fitness = 100.0 / (1 + index) + 10
                ratios = tuple(0.7 + 0.01 * math.sin(b + index) for b in range(N_BLOCKS))
                cand = ev.Candidate(index, g, text, fitness, ratios, c.seconds)
                c.on_event(ev.NewBest(cand))
                c.on_event(ev.CandidateScored(cand))
                fits.append(fitness)
                c.evaluated += 1
                c.control.candidate_done()
            c.on_event(ev.GenerationDone(g, min(fits), sorted(fits)[len(fits) // 2], len(fits), 0))
        c.on_event(ev.SearchFinished(None, {"uniform": 500.0, "owl": 480.0}))
    return script


def structured_script(offspring: int, stages, generations: int):
    """Levels on a 9-head, 10-MLP-level grid; stage s of generation g scores what survived stage s-1."""
    def script(c: FakeController):
        best = None
        for g in range(generations):
            pool = [f"attn {' '.join(str(4 + (b + i + g) % 2) for b in range(N_BLOCKS))} / "
                    f"mlp {' '.join(str(5 + (b * i) % 3 - 1) for b in range(N_BLOCKS))}" for i in range(offspring + 1)]
            for s, stage in enumerate(stages):
                scored = []
                for text in pool:
                    index = c.evaluated
                    c.on_event(ev.CandidateStarted(index, g, text))
                    c.wait()
                    fitness = 1.0 / (2 + g + s) + 0.001 * len(scored)
                    cand = ev.Candidate(index, g, text, fitness, (), c.seconds, stage=s)
                    c.on_event(ev.CandidateScored(cand))
                    scored.append((fitness, text))
                    c.evaluated += 1
                    c.control.candidate_done()
                pool = [t for _, t in sorted(scored)[:stage.survivors]]
                c.on_event(ev.StageDone(g, s, len(scored), len(pool), stage.finetune_tokens, stage.fitness_tokens,
                                        min(scored)[0]))
            winner = ev.Candidate(c.evaluated, g, pool[0], min(scored)[0], (), stage=len(stages) - 1)
            if best is None or winner.fitness < best.fitness:
                best = winner
                c.on_event(ev.NewBest(winner))
            c.on_event(ev.GenerationDone(g, winner.fitness, None, offspring + 1, 0))
        c.on_event(ev.SearchFinished(best, {"uniform": 90.0, "searched": 80.0}))
    return script


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
        self.controller = FakeController(on_event, dsa_script(min(params.population, 4), min(params.generations, 3)),
                                         self.candidate_seconds)
        return self.controller

    def start_structured(self, params, on_event, status):
        self.calls.append(("start_structured", params))
        stages = parse_stages(params.stages)
        status("level database: 1/1")
        self.structured = FakeController(on_event, structured_script(min(params.offspring, 3), stages,
                                                                     min(params.generations, 2)),
                                         self.candidate_seconds)
        info = StructuredInfo(params.run, 9, 10, min(params.offspring, 3),
                              [(st.survivors, 0 if params.one_shot else st.finetune_tokens, st.fitness_tokens)
                               for st in stages], "new search")
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
            raise ValueError("output exists already exists (use --force to replace it)")
        return out

    def memory(self):
        return "model 1 MiB + caches 1 MiB"
