"""A structured run folder: the model and data it was built for, its level database and its search.

    structured.json   format marker, model, data settings, MLP levels (written by build-db)
    db/               the level database (see engine.structured.database)
    run.json, candidates.jsonl, state.json, best.txt, final.json   the search (see engine.search.store)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from engine.corpus import token_windows
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.evaluation import DenseReference, perplexity
from engine.loading import load_model
from engine.progress import Progress, no_progress
from engine.search.store import RunStore, write_atomic
from engine.session import Session
from engine.structured.compact import build_compact
from engine.structured.database import LevelDatabase, build_database, estimate_bytes
from engine.structured.finetune import finetune
from engine.structured.search import StructuredSearch, StructuredSettings
from engine.structured.structure import Shapes, Structure

RUN_FORMAT = "dsa-workbench/structured-run"
SEARCH_FORMAT = "dsa-workbench/structured-search"


@dataclass(frozen=True)
class RunSource:
    model: str | None  # None: the default model
    data: DataConfig
    mlp_levels: int = 10


class StructuredRun:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.manifest = self.folder / "structured.json"
        self.store = RunStore(self.folder, SEARCH_FORMAT)

    @property
    def db_folder(self) -> Path:
        return self.folder / "db"

    def source(self) -> RunSource:
        if not self.manifest.exists():
            raise WorkbenchError(f"{self.folder} is not a structured run: build its level database first "
                                 f"(dsa-workbench structured build-db --run {self.folder})")
        try:
            meta = json.loads(self.manifest.read_text())
            if meta.get("format") != RUN_FORMAT:
                raise ValueError(meta.get("format"))
            return RunSource(meta["model"], DataConfig(**meta["data"]), meta["mlp_levels"])
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkbenchError(f"{self.manifest} is corrupt or not a structured run") from exc

    def claim(self, source: RunSource) -> None:
        """Record what the database is built for; an existing folder must agree."""
        if self.manifest.exists():
            if self.source() != source:
                raise WorkbenchError(f"{self.folder} was built for another model, data or level settings: "
                                     "choose another --run folder")
            return
        if self.folder.exists() and any(self.folder.iterdir()):
            raise WorkbenchError(f"run folder {self.folder} exists and is not a structured run")
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifest, json.dumps({"format": RUN_FORMAT, "model": source.model,
                                                "data": asdict(source.data), "mlp_levels": source.mlp_levels},
                                               indent=2))

    @property
    def has_database(self) -> bool:
        return (self.db_folder / "index.json").exists()


class Workspace:
    """A loaded dense model with its level database: builds, fine-tunes and scores pruned models."""

    def __init__(self, session: Session, db: LevelDatabase, lr: float = 1e-5):
        self.session = session
        self.db = db
        self.lr = lr
        self._reference: DenseReference | None = None  # the largest one asked for so far
        self._windows: dict[str, torch.Tensor] = {}

    @property
    def shapes(self) -> Shapes:
        return self.db.shapes

    def compact(self, structure: Structure):
        """A new pruned model (copies: the dense model is read under the session's lock, never changed)."""
        with self.session.lock:
            self.session.restore()  # a DSA pruning in the same session (the TUI) leaves masks behind
            return build_compact(self.session.model, self.db, structure)

    def windows(self, split: str, tokens: int, what: str) -> torch.Tensor:
        """The first `tokens` of a split as windows (tokenised once for the largest count asked for)."""
        seqlen = self.session.data.seqlen
        if tokens < seqlen:
            raise WorkbenchError(f"{what} tokens {tokens} are less than one window of {seqlen} tokens (--seqlen)")
        held = self._windows.get(split)
        if held is None or held.numel() < tokens // seqlen * seqlen:
            held = self._windows[split] = token_windows(self.session.loaded.tokenizer, self.session.splits, split,
                                                        tokens, seqlen)
        return held[: tokens // seqlen]

    def reference(self, tokens: int) -> DenseReference:
        """The dense model's log-probabilities on (at least) the first `tokens` of the fitness split."""
        windows = self.windows("fitness", tokens, "fitness")
        if self._reference is None or len(self._reference.windows) < len(windows):
            with self.session.lock:
                self.session.restore()
                self._reference = DenseReference(self.session.model, windows, batch_size=self.session.data.batch_size,
                                                 progress=self.session.progress)
        return self._reference

    def prepared(self, compact, finetune_tokens: int, check: Progress = no_progress) -> None:
        if finetune_tokens:
            finetune(compact, self.windows("calibration", finetune_tokens, "fine-tune"), lr=self.lr,
                     batch_size=self.session.data.batch_size, progress=check)

    def evaluate(self, structure: Structure, finetune_tokens: int, fitness_tokens: int,
                 check: Progress = no_progress) -> tuple[float, float]:
        """KL(dense || pruned) on `fitness_tokens` after fine-tuning a fresh copy on `finetune_tokens`."""
        start = time.perf_counter()
        reference = self.reference(fitness_tokens)
        model = self.compact(structure)
        self.prepared(model, finetune_tokens, check)
        windows = fitness_tokens // self.session.data.seqlen
        return reference.kl(model, check, windows=windows), time.perf_counter() - start

    def held_out(self, texts: dict[str, str], finetune_tokens: int = 0) -> dict[str, float]:
        """Perplexity on the evaluation split (never seen by the search) of each named structure."""
        out = {}
        for name, text in texts.items():
            model = self.compact(Structure.parse(text, self.shapes))
            self.prepared(model, finetune_tokens)
            out[name] = perplexity(model, self.session.windows("evaluation"), batch_size=self.session.data.batch_size,
                                   progress=self.session.progress, stage=f"held-out perplexity ({name})")
        return out


def open_session(source: RunSource, dtype: str, device: str, progress: Progress,
                 status: Callable[[str], None]) -> Session:
    loaded = load_model(source.model, dtype=dtype, device=device, status=status)
    Shapes.of(loaded.model.config, source.mlp_levels)  # refuse unsupported models before any work
    return Session(loaded, source.data, progress=progress)


def build_run_database(run: str | Path, source: RunSource, *, session: Session | None = None, dtype: str = "auto",
                       device: str = "auto", progress: Progress = no_progress,
                       status: Callable[[str], None] = lambda m: None, check=lambda *a: None) -> LevelDatabase:
    """Create (or finish) the level database of `run`, printing its size estimate first."""
    folder = StructuredRun(run)
    folder.claim(source)
    if folder.has_database:
        status(f"level database already built in {folder.db_folder}")
        return LevelDatabase(folder.db_folder)
    session = session or open_session(source, dtype, device, progress, status)
    shapes = Shapes.of(session.model.config, source.mlp_levels)
    need = estimate_bytes(shapes, next(session.model.parameters()).element_size())
    free = shutil.disk_usage(folder.folder).free
    status(f"level database: {shapes.layers} blocks x ({shapes.heads + 1} attention + {shapes.mlp_levels + 1} MLP "
           f"levels), about {need / 2**20:.0f} MiB on disk in {folder.db_folder}")
    if free < need * 1.05:
        raise WorkbenchError(f"not enough disk space for the level database: {need / 2**30:.2f} GiB needed, "
                             f"{free / 2**30:.2f} GiB free in {folder.folder}")
    return build_database(session, folder.db_folder, shapes, progress=progress, check=check)


def open_workspace(run: str | Path, *, session: Session | None = None, lr: float = 1e-5, dtype: str = "auto",
                   device: str = "auto", progress: Progress = no_progress,
                   status: Callable[[str], None] = lambda m: None) -> Workspace:
    folder = StructuredRun(run)
    source = folder.source()
    db = LevelDatabase(folder.db_folder)
    if session is not None and (session.data != source.data or session.loaded.source != source.model):
        raise WorkbenchError(f"run {run} was built for another model or other data settings than the loaded ones")
    return Workspace(session or open_session(source, dtype, device, progress, status), db, lr)


def open_structured_search(run: str | Path, settings: StructuredSettings | None = None, *,
                           workspace: Workspace | None = None, on_event=lambda e: None, **open_args) -> StructuredSearch:
    """A new search in `run` (settings given) or the one stored there (settings None: resume)."""
    folder = StructuredRun(run)
    folder.source()
    LevelDatabase(folder.db_folder)  # fails early without a database
    if settings is None:
        stored = StructuredSettings.from_json(folder.store.settings())
    elif folder.store.exists:
        raise WorkbenchError(f"run folder {folder.folder} already holds a search: resume it (--resume) or "
                             "choose another folder")
    active = stored if settings is None else settings
    workspace = workspace or open_workspace(run, **open_args)
    workspace.lr = active.lr
    # fail now, not candidates later, on token counts the windows or the corpus cannot give
    workspace.reference(max(stage.fitness_tokens for stage in active.stages))
    for i, stage in enumerate(active.stages):
        workspace.windows("fitness", stage.fitness_tokens, "fitness")
        if active.finetune_tokens(i):
            workspace.windows("calibration", active.finetune_tokens(i), "fine-tune")
    if settings is not None:
        folder.store.create(settings.to_json(), into_existing=True)
    return StructuredSearch(active, workspace.shapes, folder.store, workspace.evaluate,
                            fractions=workspace.db.block_fractions, held_out=workspace.held_out, on_event=on_event)
