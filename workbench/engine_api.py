"""The small API the TUI's panes and workers use: blocking calls on one loaded model.

Every call that runs torch work is made from a thread worker in the App; user errors come back as
ValueError with a one-line message."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Callable

import torch

from engine.allocation import AllocationFunction
from engine.allocation.ops import STAGES
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.export import export_pruned
from engine.loading import load_model
from engine.search import SearchController, SearchSettings, open_search
from engine.session import Session
from engine.structured.export import export_structure
from engine.structured.run import (RunSource, StructuredRun, build_run_database, open_structured_search,
                                   open_workspace)
from engine.structured.search import StructuredSettings, parse_stages
from engine.structured.structure import Structure
from screens.messages import AllocationView
from screens.settings import SearchParams
from screens.structured import StructuredParams


@dataclass(frozen=True)
class ModelInfo:
    label: str
    device: str
    dtype: str
    blocks: int


@dataclass(frozen=True)
class StructuredInfo:
    """What the structured pane shows about a search it started."""

    run: str
    heads: int
    mlp_levels: int
    offspring: int
    stages: list[tuple[int, int, int]]  # survivors, fine-tune tokens (0 when one-shot), fitness tokens
    note: str


def user_errors(fn):
    """Turn the engine's user-facing errors into ValueError, which the panes know."""
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WorkbenchError as exc:
            raise ValueError(str(exc)) from exc
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class EngineAPI:
    def __init__(self, model: str | None = None, data: DataConfig = DataConfig(), *, dtype: str = "auto",
                 device: str = "auto"):
        self.model_source = model
        self.data = data
        self.dtype = dtype
        self.device = device
        self.session: Session | None = None

    @user_errors
    def load(self, status: Callable[[str], None]) -> ModelInfo:
        loaded = load_model(self.model_source, dtype=self.dtype, device=self.device, status=status)
        cores = os.cpu_count() or 1
        if loaded.device.type == "cpu" and cores > 1:
            torch.set_num_threads(cores - 1)  # leave the interface a core, so keys are answered at once
        gc.freeze()  # the model's many objects leave the GC's scans, which otherwise stall the UI thread
        self.session = Session(loaded, self.data)
        return ModelInfo(loaded.label, str(loaded.device), str(loaded.dtype).removeprefix("torch."),
                         len(self.session.blocks))

    def palette(self) -> dict[str, list[str]]:
        return {stage: [op for op in ops if op != "no_op"] for stage, ops in STAGES.items()}

    @user_errors
    def parse(self, text: str) -> dict:
        f = AllocationFunction.parse(text)
        return {"pre": f.pre, "reduction": f.reduction, "transform": f.transform, "lam": f.lam,
                "direction": f.direction}

    @user_errors
    def format(self, fields: dict) -> str:
        return str(AllocationFunction(**fields))

    @user_errors
    def allocation(self, method: str, sparsity: float, metric: str, status=lambda m: None) -> AllocationView:
        """Per-block ratios of a method or function: no model forward (block samples are cached)."""
        session = self._session()
        if not session.has_allocation_inputs(metric):
            status("calibrating (once)…")
            with session.lock:
                session.allocation_inputs(metric).samples  # noqa: B018
        a = session.allocate(method, sparsity, metric)
        return AllocationView(a.method, a.target, a.block_ratios, a.block_values)

    @user_errors
    def fitness(self, text: str, sparsity: float, metric: str) -> tuple[float, AllocationView]:
        """Perplexity on the fitness split of a function, for the leaderboard."""
        a, ppl = self._session().score(text, sparsity, metric, "fitness")
        return ppl, AllocationView(a.method, a.target, a.block_ratios, a.block_values)

    @user_errors
    def held_out(self, method: str, sparsity: float, metric: str) -> float:
        return self._session().score(method, sparsity, metric, "evaluation")[1]

    @user_errors
    def start_search(self, params: SearchParams, seeds: list[str], on_event, status) -> SearchController:
        """Open (or resume) a search on the loaded model and start it in its own thread."""
        session = self._session()
        settings = None if params.resume else SearchSettings(
            sparsity=params.sparsity, metric=params.metric, fitness=params.fitness, strategy=params.strategy,
            population=params.population, generations=params.generations, seeds=tuple(seeds),
            model=session.loaded.source, data=self.data)
        search = open_search(params.run, settings, session=session, on_event=on_event, status=status)
        controller = SearchController(search)
        controller.start()
        return controller

    @user_errors
    def export(self, method: str, sparsity: float, metric: str, out: str, sparse_format: str, dtype: str,
               force: bool, progress) -> str:
        done = export_pruned(self._session(), method, sparsity, metric, out, dtype=dtype, force=force,
                             sparse_format=sparse_format, progress=progress)
        return str(done.path)

    @user_errors
    def start_structured(self, params: StructuredParams, on_event, status) -> tuple[SearchController, StructuredInfo]:
        """Build the run's level database if it has none, then start a new search or resume the stored one."""
        session = self._session()
        run = StructuredRun(params.run)
        built = run.has_database
        build_run_database(params.run, RunSource(session.loaded.source, self.data), session=session, status=status,
                           progress=lambda stage, done, total: status(f"{stage}: {done}/{total}"))
        resume = run.store.exists
        settings = None if resume else StructuredSettings(
            target=params.target, generations=params.generations, offspring=params.offspring,
            stages=parse_stages(params.stages), one_shot=params.one_shot, lr=params.lr)
        workspace = open_workspace(params.run, session=session, lr=params.lr)
        search = open_structured_search(params.run, settings, workspace=workspace, on_event=on_event)
        controller = SearchController(search)
        controller.start()
        settings = search.settings
        stages = [(st.survivors, settings.finetune_tokens(i), st.fitness_tokens) for i, st in enumerate(settings.stages)]
        note = ("resumed the stored search" if resume else "new search") + ("" if built else "; level database built")
        return controller, StructuredInfo(params.run, search.shapes.heads, search.shapes.mlp_levels,
                                          settings.offspring, stages, note)

    @user_errors
    def export_structured(self, run: str, out: str, finetune_tokens: int, lr: float, force: bool, progress) -> str:
        """Export the best structure of `run`'s search as a smaller model folder."""
        workspace = open_workspace(run, session=self._session(), lr=lr)
        best = (StructuredRun(run).store.load_state(repair=False) or {}).get("best")
        if best is None:
            raise WorkbenchError(f"run {run} has no searched structure yet: start the search first")
        done = export_structure(workspace, Structure.parse(best["text"], workspace.shapes), out,
                                finetune_tokens=finetune_tokens, force=force, progress=progress)
        return str(done.path)

    def memory(self) -> str:
        if self.session is None:
            return "-"
        held = sum(self.session.cache_bytes().values())
        params = sum(p.numel() * p.element_size() for p in self.session.model.parameters())
        return f"model {params / 2**20:.0f} MiB + caches {held / 2**20:.0f} MiB"

    def _session(self) -> Session:
        if self.session is None:
            raise WorkbenchError("the model is still loading")
        return self.session
