"""Data settings shared by every command (no torch import, so the CLI can show defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SAMPLE_SIZE = 1 << 18  # scores sampled per block as allocation-function input


@dataclass(frozen=True)
class DataConfig:
    corpus: str | None = None  # None: the default speeches
    seed: int = 0
    seqlen: int = 512
    calib_tokens: int = 32768
    fitness_tokens: int = 2048
    eval_tokens: int = 8192
    batch_size: int = 4
    sample_size: int = DEFAULT_SAMPLE_SIZE

    def tokens(self, split: str) -> int:
        return {"calibration": self.calib_tokens, "fitness": self.fitness_tokens,
                "evaluation": self.eval_tokens}[split]
