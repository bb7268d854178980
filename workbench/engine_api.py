"""The small API the TUI's panes and workers use: calls on one loaded model.

Every call that runs torch work is made from a thread worker in the App; the searches run in their
controllers' own threads and report through events. User errors come back as ValueError with a
one-line message."""

from __future__ import annotations

import gc
import os
from dataclasses import replace
from typing import Callable

import torch

from engine.allocation import AllocationFunction
from engine.allocation.ops import STAGES
from engine.choices import DEFAULT_SPARSITY, RECIPE_EXPORT
from engine.architecture import linear_path
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.export import export_pruned
from engine.loading import load_model
from engine.progress import Progress, no_progress
from engine.search.controller import SearchController
from engine.search.search import SearchSettings
from engine.search.start import search_controller
from engine.session import Session
from engine.structured.export import export_structure
from engine.structured.run import RunSource, StructuredRun, open_workspace, structured_controller
from engine.structured.search import StructuredSettings
from engine.structured.structure import Shapes, Structure
from workbench.contract import AllocationView, ModelInfo, RunOptions, StructuredInfo
from workbench.views import allocation_view


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
                 device: str = "auto", device_map: str | None = None):
        self.model_source = model
        self.data = data
        self.dtype = dtype
        self.device = device
        self.device_map = device_map
        self.session: Session | None = None
        self.layout: tuple[tuple[int, int, int], ...] = ()  # ModelInfo.layout, once loaded
        self.model_bytes = 0
        self.searches: list[SearchController] = []

    @user_errors
    def load(self, status: Callable[[str], None], progress: Progress = no_progress) -> ModelInfo:
        """Load the model; `progress` hears of later long work on it (calibration, in tokens)."""
        loaded = load_model(self.model_source, dtype=self.dtype, device=self.device, device_map=self.device_map,
                            status=status)
        cores = os.cpu_count() or 1
        if loaded.device.type == "cpu" and cores > 1:
            torch.set_num_threads(cores - 1)  # leave the interface a core, so keys are answered at once
        gc.freeze()  # the model's many objects leave the GC's scans, which otherwise stall the UI thread
        self.session = Session(loaded, self.data, progress=progress)
        self.model_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        self.layout = tuple((b.index, 0 if linear_path(n).startswith("self_attn.") else 1, lin.weight.numel())
                            for b in self.session.blocks for n, lin in b.linears.items())
        return ModelInfo(loaded.label, str(loaded.device), str(loaded.dtype).removeprefix("torch."),
                         len(self.session.blocks), self.layout)

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
    def allocation(self, method: str, sparsity: float, metric: str) -> AllocationView:
        """Per-block ratios of a method or function: no model forward once the block samples are cached
        (the first call calibrates, reporting to the load's `progress`)."""
        session = self._session()
        if not session.has_allocation_inputs(metric):
            with session.lock:
                session.allocation_inputs(metric).samples  # noqa: B018
        a = session.allocate(method, sparsity, metric)
        return allocation_view(a.method, a.target, a.candidate_ratios, self.layout, a.block_values)

    @user_errors
    def importance(self, metric: str) -> dict[str, tuple[float, ...]]:
        """The model's own per-block importance: mean element score and OWL's outlier fraction."""
        inputs = self._session().allocation_inputs(metric)
        return {"mean score": tuple(inputs.mean_scores), "outliers": tuple(inputs.outlier_fractions)}

    @user_errors
    def fitness(self, text: str, sparsity: float, metric: str) -> tuple[float, AllocationView]:
        """Perplexity on the fitness split of a function, for the leaderboard."""
        a, ppl = self._session().score(text, sparsity, metric, "fitness")
        return ppl, allocation_view(a.method, a.target, a.candidate_ratios, self.layout, a.block_values)

    @user_errors
    def distill(self, profile: str, sparsity: float, metric: str) -> tuple[str, float]:
        """The palette function closest to a profile (no forward) and its rms distance to it."""
        from engine.allocation.distill import distill

        session = self._session()
        found = distill(list(session.allocate(profile, sparsity, metric).block_ratios),
                        session.allocation_inputs(metric), sparsity)
        return found.function, found.rmse

    @user_errors
    def held_out(self, method: str, sparsity: float, metric: str, tasks: tuple[str, ...] = (),
                 limit: int | None = None, progress: Progress = no_progress) -> tuple[float, dict]:
        """Held-out perplexity, and zero-shot accuracy on `tasks` (task -> score JSON), of one allocation."""
        session = self._session()
        with session.lock:
            ppl = session.score(method, sparsity, metric, "evaluation")[1]
            return ppl, session.zero_shot(tasks, limit, progress) if tasks else {}

    @user_errors
    def search_settings(self, base: SearchSettings | None = None, **fields) -> SearchSettings:
        """`base` (default: the defaults, on this API's model and data) with `fields` changed, validated by the
        engine: any SearchSettings field, stages and tasks as text too. Automatic stages follow a new population."""
        base = base or SearchSettings(DEFAULT_SPARSITY, model=self.model_source, data=self.data)
        if "stages" not in fields and base.stages_are_auto:
            fields["stages"] = "auto"
        return replace(base, **fields)

    @user_errors
    def start_search(self, settings: SearchSettings, options: RunOptions, seeds: list[str], on_event, status,
                     progress: Progress = no_progress) -> SearchController:
        """Open a new search with `settings` and the `seeds` in its first population, or resume the stored one
        (`options.resume`, its own settings), and start it: it prepares its caches (or reaches `options.cluster` and
        starts its workers) in its own thread, announcing every state through `on_event`."""
        session = self._session()
        self._one_search_at_a_time()
        settings = None if options.resume else replace(settings, seeds=settings.seeds + tuple(seeds),
                                                       model=session.loaded.source)  # (repeats dropped)
        cluster = options.cluster or None  # with a cluster the workers load the model themselves
        controller = search_controller(options.run, settings, session=None if cluster else session, cluster=cluster,
                                       workers=options.workers or None, connect_now=False, dtype=self.dtype,
                                       on_event=on_event, progress=progress, status=status)
        return self._started(controller)

    @user_errors
    def export(self, method: str, sparsity: float, metric: str, out: str, sparse_format: str, dtype: str,
               force: bool, progress) -> str:
        if sparse_format == RECIPE_EXPORT:  # the allocation as an llm-compressor recipe, no model written
            from engine.llmcompressor_recipe import session_recipe, write_recipe

            session = self._session()
            with session.lock:  # allocating may calibrate: not while a search prunes the model
                text = session_recipe(session, method, sparsity, metric)[0]
            return str(write_recipe(text, out, force))
        done = export_pruned(self._session(), method, sparsity, metric, out, dtype=dtype, force=force,
                             sparse_format=sparse_format, progress=progress)
        return str(done.path)

    @user_errors
    def report(self, run: str, out: str) -> str:
        """The report of the search run `run` (engine.report) into `out`, replacing an older one there."""
        from engine.report import write_report

        return str(write_report(run, out, self._session(), force=True))

    @user_errors
    def structured_settings(self, base: StructuredSettings | None = None, **fields) -> StructuredSettings:
        """`base` (default: the defaults) with `fields` changed, validated by the engine (stages as text too)."""
        return replace(base or StructuredSettings(), **fields)

    @user_errors
    def start_structured(self, run_folder: str, settings: StructuredSettings, on_event, status,
                         progress: Progress = no_progress) -> tuple[SearchController, StructuredInfo]:
        """Start a new structured search with `settings`, or resume the one stored in `run_folder` (its own
        settings); its thread builds the run's level database first when the run has none."""
        session = self._session()
        self._one_search_at_a_time()
        run = StructuredRun(run_folder)
        resume = run.store.exists
        settings = None if resume else settings
        source = RunSource(session.loaded.source, self.data)
        controller = structured_controller(run_folder, settings, source=source, session=session, on_event=on_event,
                                           progress=progress, status=status)
        active = settings or StructuredSettings.from_json(run.store.settings())
        shapes = Shapes.of(session.model.config, source.mlp_levels)
        stages = [(st.survivors, active.finetune_tokens(i), st.fitness_tokens) for i, st in enumerate(active.stages)]
        note = ("resuming the stored search" if resume else "new search") + \
            ("" if run.has_database else "; building the level database first")
        return self._started(controller), StructuredInfo(run_folder, shapes.heads, shapes.mlp_levels,
                                                         active.offspring, stages, note)

    def _one_search_at_a_time(self) -> None:
        if any(c.running for c in self.searches):
            raise WorkbenchError("another search is still running: stop it first (t on its pane: F2 for the DSA "
                                 "search, F7 for the structured one)")

    def _started(self, controller: SearchController) -> SearchController:
        self.searches = [c for c in self.searches if c.running] + [controller]
        controller.start()
        return controller

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
        """For the UI thread every second: the model's size and the caches' as the session last published them."""
        if self.session is None:
            return "-"
        return f"model {self.model_bytes / 2**20:.0f} MiB + caches {sum(self.session.memory.values()) / 2**20:.0f} MiB"

    def _session(self) -> Session:
        if self.session is None:
            raise WorkbenchError("the model is still loading")
        return self.session
