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
from screens.messages import AllocationView
from screens.settings import SearchParams


@dataclass(frozen=True)
class ModelInfo:
    label: str
    device: str
    dtype: str
    blocks: int


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
