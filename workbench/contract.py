"""The contract between the panes and the engine API: what the panes hand over besides the engine's own settings
types, and the views of engine results they get back. Plain frozen records, no torch and no textual, so every
layer may import them."""

from __future__ import annotations

from dataclasses import dataclass

from engine.choices import DEFAULT_RUN


@dataclass(frozen=True)
class RunOptions:
    """Where a DSA search runs, apart from its settings (engine.search.search.SearchSettings, which its run.json
    keeps): the run folder, new or resumed, and the machines that score its candidates."""

    run: str = DEFAULT_RUN
    resume: bool = False
    cluster: str = ""  # "": candidates on the loaded model; "local" or a Ray address: on Ray workers
    workers: int = 0  # 0: the cluster's default (one per GPU)


@dataclass(frozen=True)
class ModelInfo:
    label: str
    device: str
    dtype: str
    blocks: int
    layout: tuple[tuple[int, int, int], ...] = ()  # per linear in model order: block, group (0 attention, 1 MLP), size


@dataclass(frozen=True)
class StructuredInfo:
    """What the structured pane shows about a search it started."""

    run: str
    heads: int
    mlp_levels: int
    offspring: int
    stages: list[tuple[int, int, int]]  # survivors, fine-tune tokens (0 when one-shot), fitness tokens
    note: str


@dataclass(frozen=True)
class AllocationView:
    """One allocation as the panes see it."""

    method: str
    target: float
    block_ratios: tuple[float, ...]
    block_values: tuple[float, ...] | None = None
    group_ratios: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # attention, MLP per block, where apart


@dataclass(frozen=True)
class ScoredCandidate:
    index: int
    generation: int
    text: str
    fitness: float | None
    ratios: tuple[float, ...]
    seconds: float
    reason: str | None = None
    strategy: str = "editor"  # what proposed it: a search strategy, or the editor
    stage: int = 0  # the selection stage its fitness is from
    final: bool = True  # scored on the whole fitness split (comparable with every final entry)
