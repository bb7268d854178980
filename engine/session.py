"""A model with its data, calibration and caches: the object the CLI and the TUI drive."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property

import torch

from engine.allocation import Allocation, AllocationInputs, compute_allocation
from engine.allocation.profiles import PROFILE, TUNED, is_block_form, parse_block_form, tuning_grid
from engine.allocation.units import granularity_of
from engine.architecture import Block, decoder_blocks
from engine.calibration import CalibrationStats, calibrate
from engine.choices import CALIBRATION_MODES
from engine.corpus import (Splits, load_texts, mixed_sources, reference_windows, split_corpus, stream_windows,
                           token_windows)
from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.evaluation import DenseReference, perplexity
from engine.loading import LoadedModel
from engine.metrics import NMPattern, check_metric, is_magnitude, parse_pattern
from engine.progress import Progress, no_progress
from engine.pruning import HostBackup, MaskedPruning, Pruner
from engine.sequential import prune_sequentially


@dataclass(frozen=True)
class PruneResult:
    allocation: Allocation
    metric: str
    pattern: str | None
    calibration: str = "dense"


class Session:
    """Loads data lazily and keeps what does not change between prunings: token windows, calibration
    statistics, weight ranks per metric, allocation inputs per metric.

    The model's weights stay dense while it is pruned by ranks (magnitude, Wanda: `MaskedPruning`); the
    pruners that change weights (SparseGPT, N:M, block-sequential) and `write_pruned` first copy the dense
    block weights to the host, and `restore` puts them back. A session that is pruned once and saved
    (`restorable=False`, the headless prune) keeps no such copy."""

    def __init__(self, loaded: LoadedModel, data: DataConfig = DataConfig(), progress: Progress = no_progress,
                 restorable: bool = True):
        self.loaded = loaded
        self.model = loaded.model
        self.data = data
        self.progress = progress
        self._windows: dict[str, torch.Tensor] = {}
        self._calibration: CalibrationStats | None = None
        self._pruners: dict[tuple[str, str | None], Pruner] = {}
        self._inputs: dict[str, AllocationInputs] = {}
        self._references: dict[str, DenseReference] = {}
        self._masks: MaskedPruning | None = None
        self._tuned: dict[tuple[str, float, str], dict[str, float]] = {}  # the fitness of each value tried
        self.restorable = restorable
        self._backup: HostBackup | None = None  # while the weights are pruned in place
        self._changed = False  # the weights were changed in place with no copy kept
        self.pruned: PruneResult | None = None
        # The caches' sizes (cache_bytes) as of the last change to them (allocation, calibration, pruning, restore,
        # dense reference): published for
        # other threads to read, replaced whole and never changed in place.
        self.memory: dict[str, int] = {}
        # Held around any prune-then-measure sequence when several threads share the model.
        self.lock = threading.RLock()

    @cached_property
    def blocks(self) -> list[Block]:
        return decoder_blocks(self.model)

    @cached_property
    def splits(self) -> Splits:
        return split_corpus(self.data.corpus, self.data.seed)

    def windows(self, split: str, corpus: str | None = None) -> torch.Tensor:
        """The token windows of `split`; with `corpus`, of that corpus's own split (its held-out documents for
        "evaluation", never in its calibration or fitness splits), with this data's token counts."""
        if corpus is not None:
            key = f"{split}:{corpus}"
            if key not in self._windows:
                self._windows[key] = token_windows(self.loaded.tokenizer, split_corpus(corpus, self.data.seed), split,
                                                   self.data.tokens(split), self.data.seqlen)
            return self._windows[key]
        if split not in self._windows:
            if split == "evaluation" and self.data.eval_corpus:
                self._windows[split] = stream_windows(self.loaded.tokenizer, *self.eval_texts, self.data.eval_tokens,
                                                      self.data.seqlen)
            elif split == "calibration" and self.data.calib_sampling == "reference":
                if len(mixed_sources(self.data.corpus)) > 1:
                    raise WorkbenchError("--calib-sampling reference draws from one corpus, not a mix")
                if not self.data.eval_corpus:
                    raise WorkbenchError("--calib-sampling reference draws from every document of the corpus, its "
                                         "held-out ones too: give --eval-corpus (as --protocol paper does)")
                texts, source = load_texts(self.data.corpus, "train")
                self._windows[split] = reference_windows(self.loaded.tokenizer, texts, source, self.data.calib_tokens,
                                                         self.data.seqlen, self.data.seed)
            else:
                self._windows[split] = token_windows(self.loaded.tokenizer, self.splits, split,
                                                     self.data.tokens(split), self.data.seqlen)
        return self._windows[split]

    @cached_property
    def eval_texts(self) -> tuple[list[str], str]:
        """The test split of `data.eval_corpus` and its label."""
        return load_texts(self.data.eval_corpus, "test")

    @property
    def corpora(self) -> dict[str, str]:
        """Where calibration (and fitness) and evaluation text come from, as labels for every output."""
        evaluation = self.eval_texts[1] if self.data.eval_corpus else f"{self.splits.source} (held-out documents)"
        return {"calibration": self.splits.source, "evaluation": evaluation}

    def dense_weight(self, name: str) -> torch.Tensor:
        """A block linear's dense weight, whatever the current pruning."""
        linear = self.model.get_submodule(name)
        if self._backup is not None:
            return self._backup.weights[name].to(linear.weight.device)
        return self._masks.dense[name] if self._masks is not None else linear.weight.data

    def calibration(self, hessians: bool = False, progress: Progress | None = None) -> CalibrationStats:
        """Dense calibration statistics, computed on first use (`progress` reports tokens and may raise)."""
        if self._calibration is None or (hessians and self._calibration.hessians is None):
            self.restore()
            self._calibration = calibrate(self.model, self.blocks, self.windows("calibration"), hessians=hessians,
                                          batch_size=self.data.batch_size, progress=progress or self.progress)
            self.memory = self.cache_bytes()
        return self._calibration

    def pruner(self, metric: str, pattern: NMPattern | None = None, progress: Progress | None = None) -> Pruner:
        key = (check_metric(metric), str(pattern) if pattern else None)
        if key not in self._pruners:
            stats = None if is_magnitude(metric) else self.calibration(metric == "sparsegpt", progress)
            self._pruners[key] = Pruner(self.blocks, metric, stats, pattern, dense=self.dense_weight)
        return self._pruners[key]

    def allocation_inputs(self, metric: str, progress: Progress | None = None) -> AllocationInputs:
        """Allocations read magnitude scores for magnitude and Wanda scores for Wanda and SparseGPT."""
        score_metric = _score_metric(metric)
        if score_metric not in self._inputs:
            with self.lock:  # its calibration runs the dense model: not while another thread scores a candidate
                if score_metric not in self._inputs:
                    scorer = self.pruner(score_metric, progress=progress)
                    self._inputs[score_metric] = AllocationInputs(self.blocks, self.dense_weight, scorer.scores,
                                                                  seed=self.data.seed,
                                                                  sample_size=self.data.sample_size)
        return self._inputs[score_metric]

    def has_allocation_inputs(self, metric: str) -> bool:
        """Whether allocations for `metric` are ready without calibration or sampling."""
        key = _score_metric(metric)
        return key in self._inputs and "samples" in self._inputs[key].__dict__

    def allocate(self, method: str, target: float, metric: str = "wanda",
                 progress: Progress | None = None) -> Allocation:
        """OWL's outlier fractions and DLP's block scores come from Wanda scores whatever the metric, as in their
        reference code; the tuned baselines (first, ends, atp) pick their value on the fitness split. A profile
        of the wrong length is refused before any calibration."""
        if is_block_form(method):
            kind, values = parse_block_form(method)
            if kind == PROFILE:
                granularity_of(len(values), len(self.blocks))
        if method in TUNED:
            tried = self.tuned_values(method, target, metric, progress)
            picked = compute_allocation(min(tried, key=tried.get), target, self.allocation_inputs(metric))
            allocation = replace(picked, parameters={**picked.parameters, "picked_on": "fitness-split perplexity",
                                                     "tried": {text.partition(":")[2]: round(ppl, 4)
                                                               for text, ppl in tried.items()}})
        else:
            allocation = compute_allocation(method, target,
                                            self.allocation_inputs("wanda" if method in ("owl", "dlp") else metric))
        self.memory = self.cache_bytes()
        return allocation

    def tuned_values(self, kind: str, target: float, metric: str, progress: Progress | None = None) -> dict[str, float]:
        """A tuned baseline's texts on its grid (engine.allocation.profiles.tuning_grid) with their perplexity
        on the fitness split (scored once per target and metric); those the grid cannot allocate are left out."""
        key = (kind, target, metric)
        if key not in self._tuned:
            tried = {}
            with self.lock, self._pruning_kept():
                for text in tuning_grid(kind, target, len(self.blocks)):
                    try:
                        tried[text] = self.score(text, target, metric, "fitness", progress)[1]
                    except WorkbenchError:  # the other blocks cannot take the rest of the budget
                        continue
            if not tried:
                raise WorkbenchError(f"'{kind}': no value of its grid keeps the mean at the target {target}")
            self._tuned[key] = tried
        return self._tuned[key]

    @contextmanager
    def _pruning_kept(self):
        """Whatever is pruned inside, the pruning from before is back afterwards."""
        pruned = self.pruned
        try:
            yield
        finally:
            self.restore()
            if pruned is not None:
                self.prune(pruned.allocation, pruned.metric, parse_pattern(pruned.pattern),
                           calibration=pruned.calibration)

    def prune(self, allocation: Allocation, metric: str, pattern: NMPattern | None = None,
              progress: Progress | None = None, calibration: str = "dense") -> PruneResult:
        """Prune to the allocation: by ranks without touching the weights where the metric allows, in place
        otherwise. `calibration` "sequential" prunes block by block from the pruned prefix's outputs."""
        if calibration not in CALIBRATION_MODES:
            raise WorkbenchError(f"unknown calibration '{calibration}'; use one of {', '.join(CALIBRATION_MODES)}")
        if pattern is not None and any(abs(r - pattern.ratio) > 1e-9 for r in allocation.linear_ratios.values()):
            raise WorkbenchError(f"an {pattern} pattern prunes every layer to {pattern.ratio:g}: use the uniform "
                                 f"allocation at sparsity {pattern.ratio:g}")
        ratios = allocation.linear_ratios
        progress = progress or self.progress
        if calibration == "sequential":
            self.restore()
            self._keep_dense()
            prune_sequentially(self.model, self.blocks, self.windows("calibration"), ratios, check_metric(metric),
                               pattern, self.data.batch_size, progress)
        else:
            pruner = self.pruner(metric, pattern, progress)
            self.restore()
            if pruner.masked:
                pruner.prepare()
                self._masks = MaskedPruning(self.blocks, pruner, ratios)
            else:
                self._keep_dense()
                pruner.prune_in_place(ratios, progress)
        self.pruned = PruneResult(allocation, metric, str(pattern) if pattern else None, calibration)
        self.memory = self.cache_bytes()
        return self.pruned

    def write_pruned(self) -> None:
        """Put the pruned weights into the model's parameters (to save them); `restore` still undoes it."""
        if self._masks is not None:
            self._keep_dense()
            self._masks.write()
            self._masks = None

    def _keep_dense(self) -> None:
        """Before the weights change in place: a host copy to restore them, or note there is none."""
        if self.restorable:
            self._backup = HostBackup(self.blocks)
        else:
            self._changed = True

    def achieved(self) -> dict[str, float]:
        """Sparsity reached per block linear: zeros counted in the weights as pruned (the model's own exact
        zeros included)."""
        out = {}
        with torch.no_grad():
            for b in self.blocks:
                for name, lin in b.linears.items():
                    weight = lin.weight.data
                    if self._masks is not None:
                        weight = self._masks.pruner.pruned(name, self._masks.dense[name], self._masks.ratios[name])
                    out[name] = int((weight == 0).sum()) / weight.numel()
        return out

    def score(self, method: str, target: float, metric: str, split: str = "evaluation",
              progress: Progress | None = None, corpus: str | None = None) -> tuple[Allocation, float]:
        """Allocate, prune and measure perplexity on `split` (of `corpus`, see `windows`), holding the lock."""
        with self.lock:
            allocation = self.allocate(method, target, metric, progress)
            self.prune(allocation, metric, progress=progress)
            return allocation, self.perplexity(split, progress=progress, corpus=corpus)

    def restore(self) -> None:
        """Dense weights again (no-op when nothing is pruned)."""
        if self._changed:
            raise WorkbenchError("the dense weights were pruned in place and not kept (a session for one pruning)")
        if self._masks is not None:
            self._masks.remove()
            self._masks = None
        if self._backup is not None:
            self._backup.restore()
            self._backup = None
            self.memory = self.cache_bytes()
        self.pruned = None

    def perplexity(self, split: str = "evaluation", progress: Progress | None = None, tokens: int | None = None,
                   corpus: str | None = None) -> float:
        """On `split` (of `corpus`, see `windows`), or on its first `tokens` tokens (whole windows)."""
        return perplexity(self.model, self.windows(split, corpus)[:self._window_count(tokens)],
                          batch_size=self.data.batch_size, progress=progress or self.progress,
                          stage=f"{split} perplexity" + (f" ({corpus})" if corpus else ""))

    def zero_shot(self, tasks: tuple[str, ...], limit: int | None = None, progress: Progress | None = None) -> dict:
        """Zero-shot accuracy (engine.zeroshot) of the model as it is now pruned, by task: JSON-ready."""
        from engine.zeroshot import zero_shot

        with self.lock:
            scores = zero_shot(self.model, self.loaded.tokenizer, tasks, limit=limit, batch_size=self.data.batch_size,
                               progress=progress or self.progress)
        return {name: score.to_json() for name, score in scores.items()}

    def _window_count(self, tokens: int | None) -> int | None:
        return None if tokens is None else max(1, tokens // self.data.seqlen)

    def dense_reference(self, split: str, progress: Progress | None = None,
                        tokens: int | None = None) -> DenseReference:
        """The dense model's log-probabilities on `split`, or on its first `tokens` tokens: only as many windows
        as asked for are held (a whole WikiText-2 test split would take tens of GB), more when more are asked."""
        windows = self.windows(split)[:self._window_count(tokens)]
        held = self._references.get(split)
        if held is None or len(held.windows) < len(windows):
            with self._pruning_kept():
                self.restore()
                self._references[split] = DenseReference(self.model, windows, batch_size=self.data.batch_size,
                                                          progress=progress or self.progress)
            self.memory = self.cache_bytes()
        return self._references[split]

    def kl(self, split: str = "evaluation", progress: Progress | None = None, tokens: int | None = None) -> float:
        """KL(dense || model) on `split`, or on its first `tokens` tokens (whole windows)."""
        return self.dense_reference(split, progress, tokens).kl(self.model, progress or self.progress,
                                                                windows=self._window_count(tokens))

    def cache_bytes(self) -> dict[str, int]:
        """Memory held by the caches that make re-pruning cheap, by cache. (Each dict is copied before it is read:
        another engine thread may add to it meanwhile.)"""
        tensors = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
        calibration, backup = self._calibration, self._backup  # read once: another thread may drop them
        return {"row ranks": sum(p.rank_bytes() for p in list(self._pruners.values())),
                "calibration": calibration.nbytes() if calibration else 0,
                "block samples": sum(tensors(s.matrix for s in i.samples) for i in list(self._inputs.values())
                                     if "samples" in i.__dict__),
                "dense references": sum(r.nbytes for r in list(self._references.values())),
                "host copy of the dense weights": backup.nbytes if backup else 0}


def _score_metric(metric: str) -> str:
    """The scores allocations read: magnitude for magnitude, Wanda for Wanda and SparseGPT."""
    return "magnitude" if is_magnitude(check_metric(metric)) else "wanda"


__all__ = ["DataConfig", "PruneResult", "Session"]
