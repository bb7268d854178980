"""Data settings shared by every command (no torch import, so the CLI can show defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SAMPLE_SIZE = 1 << 18  # scores sampled per block as allocation-function input
# --protocol presets: "paper" is the Wanda / SparseGPT / OWL / DSA papers' (C4 calibration, 128 windows of
# 2,048 tokens; WikiText-2 test perplexity at 2,048, every window); options given on the command line win.
PROTOCOLS = {"default": {},
             "paper": {"corpus": "c4", "eval_corpus": "wikitext2", "seqlen": 2048, "calib_tokens": 128 * 2048,
                       "eval_tokens": 0}}


@dataclass(frozen=True)
class DataConfig:
    corpus: str | None = None  # None: the default speeches
    eval_corpus: str | None = None  # None: held-out documents of `corpus`; else its test split, as one stream
    seed: int = 0
    seqlen: int = 512
    calib_tokens: int = 32768
    fitness_tokens: int = 2048
    eval_tokens: int = 8192  # 0: every window of the evaluation corpus (with eval_corpus)
    batch_size: int = 4
    sample_size: int = DEFAULT_SAMPLE_SIZE

    def tokens(self, split: str) -> int:
        return {"calibration": self.calib_tokens, "fitness": self.fitness_tokens,
                "evaluation": self.eval_tokens}[split]
