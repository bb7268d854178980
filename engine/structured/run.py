"""A structured run folder: the model and data it was built for, its level database and its search.

    structured.json   format marker, model, data settings, MLP levels (written by build-db)
    db/               the level database (see engine.structured.database)
    run.json, candidates.jsonl, state.json, best.txt, final.json   the search (see engine.search.store)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from engine.choices import DEFAULT_LR, DEFAULT_MLP_LEVELS, STRUCTURED_RUN_FORMAT, STRUCTURED_SEARCH_FORMAT
from engine.corpus import token_windows
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.evaluation import DenseReference, perplexity
from engine.loading import load_model
from engine.progress import Progress, no_progress
from engine.search.control import Control
from engine.search.controller import SearchController
from engine.search.core import Outcome, attempt
from engine.saving import write_atomic
from engine.search.store import RunStore
from engine.session import Session
from engine.structured.compact import build_compact
from engine.structured.database import LevelDatabase, build_database, estimate_bytes
from engine.structured.finetune import finetune
from engine.structured.search import StructuredSearch, StructuredSettings
from engine.structured.structure import Shapes, Structure



@dataclass(frozen=True)
class RunSource:
    model: str | None  # None: the default model
    data: DataConfig
    mlp_levels: int = DEFAULT_MLP_LEVELS


class StructuredRun:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        self.manifest = self.folder / "structured.json"
        self.store = RunStore(self.folder, STRUCTURED_SEARCH_FORMAT, shared=True)

    @property
    def db_folder(self) -> Path:
        return self.folder / "db"

    def source(self) -> RunSource:
        if not self.manifest.exists():
            raise WorkbenchError(f"{self.folder} is not a structured run: build its level database first "
                                 f"(dsa-workbench structured build-db --run {self.folder})")
        try:
            meta = json.loads(self.manifest.read_text())
            if meta.get("format") != STRUCTURED_RUN_FORMAT:
                raise ValueError(meta.get("format"))
            return RunSource(meta["model"], DataConfig(**meta["data"]), meta["mlp_levels"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WorkbenchError(f"{self.manifest} is corrupt or not a structured run") from exc

    def check_claim(self, source: RunSource) -> None:
        """An existing folder must be a structured run for `source` (or empty)."""
        if self.manifest.exists():
            if self.source() != source:
                raise WorkbenchError(f"{self.folder} was built for another model, data or level settings: "
                                     "choose another --run folder")
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise WorkbenchError(f"run folder {self.folder} exists and is not a structured run")

    def claim(self, source: RunSource) -> None:
        """Record what the database is built for; an existing folder must agree."""
        self.check_claim(source)
        if self.manifest.exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifest, json.dumps({"format": STRUCTURED_RUN_FORMAT, "model": source.model,
                                                "data": asdict(source.data), "mlp_levels": source.mlp_levels},
                                               indent=2))

    @property
    def has_database(self) -> bool:
        return (self.db_folder / "index.json").exists()


class Workspace:
    """A loaded dense model with its level database: builds, fine-tunes and scores pruned models."""

    def __init__(self, session: Session, db: LevelDatabase, lr: float = DEFAULT_LR):
        if Shapes.of(session.model.config, db.shapes.mlp_levels) != db.shapes:  # the model folder changed since
            raise WorkbenchError(f"the level database in {db.folder} was built for a model of other shapes than "
                                 "the loaded one: build it again in a new --run folder")
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

    def reference(self, tokens: int, progress: Progress | None = None) -> DenseReference:
        """The dense model's log-probabilities on (at least) the first `tokens` of the fitness split."""
        windows = self.windows("fitness", tokens, "fitness")
        if self._reference is None or len(self._reference.windows) < len(windows):
            with self.session.lock:
                self.session.restore()
                self._reference = DenseReference(self.session.model, windows, batch_size=self.session.data.batch_size,
                                                 progress=progress or self.session.progress)
        return self._reference

    def prepared(self, compact, finetune_tokens: int, check: Progress = no_progress) -> None:
        if finetune_tokens:
            finetune(compact, self.windows("calibration", finetune_tokens, "fine-tune"), lr=self.lr,
                     batch_size=self.session.data.batch_size, progress=check)

    def evaluate(self, structure: Structure, finetune_tokens: int, fitness_tokens: int,
                 check: Progress = no_progress) -> float:
        """KL(dense || pruned) on `fitness_tokens` after fine-tuning a fresh copy on `finetune_tokens`."""
        reference = self.reference(fitness_tokens)
        model = self.compact(structure)
        self.prepared(model, finetune_tokens, check)
        windows = fitness_tokens // self.session.data.seqlen
        return reference.kl(model, check, windows=windows)

    def held_out(self, texts: dict[str, str], check: Progress | None = None,
                 finetune_tokens: int = 0) -> dict[str, float]:
        """Perplexity on the evaluation split (never seen by the search) of each named structure, after an
        optional fine-tune."""
        out = {}
        for name, text in texts.items():
            model = self.compact(Structure.parse(text, self.shapes))
            self.prepared(model, finetune_tokens, check or no_progress)
            out[name] = perplexity(model, self.session.windows("evaluation"), batch_size=self.session.data.batch_size,
                                   progress=check or self.session.progress, stage=f"held-out perplexity ({name})")
        return out

    def check_tokens(self, settings: StructuredSettings, progress: Progress | None = None) -> None:
        """Fail now, not candidates later, on token counts the windows or the corpus cannot give; builds
        the dense reference for the largest fitness stage."""
        self.reference(max(stage.fitness_tokens for stage in settings.stages), progress)
        for i, stage in enumerate(settings.stages):
            self.windows("fitness", stage.fitness_tokens, "fitness")
            if settings.finetune_tokens(i):
                self.windows("calibration", settings.finetune_tokens(i), "fine-tune")


class StructuredEvaluator:
    """Scores structures on one loaded model and its level database (a cluster worker holds one too)."""

    workers = 1

    def __init__(self, workspace: Workspace, settings: StructuredSettings):
        self.workspace = workspace
        self.settings = settings

    def prepare(self, progress: Progress = no_progress) -> None:
        self.workspace.check_tokens(self.settings, progress)

    def score_outcome(self, text: str, stage: int, check: Progress = no_progress) -> Outcome:
        structure = Structure.parse(text, self.workspace.shapes)
        return attempt(lambda: (self.workspace.evaluate(structure, self.settings.finetune_tokens(stage),
                                                        self.settings.stages[stage].fitness_tokens, check),
                                self.workspace.db.block_fractions(structure)))

    def evaluate(self, texts: list[str], check: Progress, stage: int = 0) -> list[Outcome]:
        return [self.score_outcome(text, stage, check) for text in texts]

    def held_out(self, texts: dict[str, str], check: Progress) -> dict[str, float]:
        return self.workspace.held_out(texts, check)


def open_session(source: RunSource, dtype: str, device: str, progress: Progress,
                 status: Callable[[str], None]) -> Session:
    loaded = load_model(source.model, dtype=dtype, device=device, status=status)
    Shapes.of(loaded.model.config, source.mlp_levels)  # refuse unsupported models before any work
    return Session(loaded, source.data, progress=progress)


def build_run_database(run: str | Path, source: RunSource, *, session: Session | None = None, dtype: str = "auto",
                       device: str = "auto", progress: Progress = no_progress,
                       status: Callable[[str], None] = lambda m: None, check=lambda *a: None) -> LevelDatabase:
    """Create (or finish, or mend) the level database of `run`, printing its size estimate first."""
    folder = StructuredRun(run)
    folder.claim(source)
    if folder.has_database:
        try:
            db = LevelDatabase(folder.db_folder)
        except WorkbenchError as exc:
            status(f"building the damaged parts of the level database again ({exc})")
        else:
            status(f"level database already built in {folder.db_folder}")
            return db
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


def open_workspace(run: str | Path, *, session: Session | None = None, lr: float = DEFAULT_LR, dtype: str = "auto",
                   device: str = "auto", progress: Progress = no_progress,
                   status: Callable[[str], None] = lambda m: None) -> Workspace:
    folder = StructuredRun(run)
    source = folder.source()
    db = LevelDatabase(folder.db_folder)
    if session is not None and (session.data != source.data or session.loaded.source != source.model):
        raise WorkbenchError(f"run {run} was built for another model or other data settings than the loaded ones")
    return Workspace(session or open_session(source, dtype, device, progress, status), db, lr)


def structured_controller(run: str | Path, settings: StructuredSettings | None = None, *,
                          source: RunSource | None = None, session: Session | None = None,
                          on_event=lambda e: None, dtype: str = "auto", device: str = "auto",
                          cluster: str | None = None, workers: int | None = None,
                          progress: Progress = no_progress,
                          status: Callable[[str], None] = lambda m: None) -> SearchController:
    """A new search in `run` (settings given) or the one stored there (settings None: resume).

    Settings and folder are checked at once; the model is loaded (or `session` used), the level database
    built when `source` is given and the run has none, and the dense reference computed in the search
    thread, where a stop works; the search's files appear only once all of that succeeded. With `cluster`
    ("local" or a Ray address) the candidates are scored by Ray workers, each holding the model and the
    database (the run folder must be reachable from every node)."""
    folder = StructuredRun(run)
    if source is None:
        folder.source()
        LevelDatabase(folder.db_folder)  # fails early without a database
    else:
        folder.check_claim(source)
    if settings is None:
        stored = folder.store.settings()
        try:
            settings = StructuredSettings.from_json(stored)
        except (WorkbenchError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise WorkbenchError(f"run folder {folder.folder} is corrupt: run.json holds no valid settings "
                                 f"({exc})") from exc
        folder.store.load_state(repair=False)  # a corrupt checkpoint fails now, not after the model is loaded
    else:
        folder.store.check_new()
    if cluster:
        from engine.search.cluster import connect

        connect(cluster, workers)  # at once: an unreachable cluster is one line, before any work

    def prepare(control: Control) -> StructuredSearch:
        def check(stage: str, done: int, total: int) -> None:
            control.checkpoint()
            progress(stage, done, total)

        active = session
        if source is not None and not folder.has_database:
            active = active or open_session(source, dtype, device, progress, status)
            build_run_database(run, source, session=active, progress=check, status=status, check=control.checkpoint)
        db = LevelDatabase(folder.db_folder)
        if cluster:
            from engine.search.cluster import ClusterEvaluator

            lr, run_path = settings.lr, str(run)
            status(f"starting Ray workers ({cluster})")
            evaluator = ClusterEvaluator(cluster, lambda: StructuredEvaluator(
                open_workspace(run_path, lr=lr, dtype=dtype), settings), workers, report=on_event)
        else:
            workspace = open_workspace(run, session=active, lr=settings.lr, dtype=dtype, device=device,
                                       progress=progress, status=status)
            evaluator = StructuredEvaluator(workspace, settings)
        control.checkpoint()
        evaluator.prepare(check)
        return StructuredSearch(settings, db.shapes, folder.store, evaluator, fractions=db.block_fractions,
                                on_event=on_event)

    return SearchController(prepare, folder.store, on_event)
