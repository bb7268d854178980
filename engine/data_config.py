"""Data settings shared by every command (no torch import, so the CLI can show defaults quickly)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import WorkbenchError

DEFAULT_SAMPLE_SIZE = 1 << 18  # scores sampled per block as allocation-function input
# --protocol presets: "paper" is the Wanda / SparseGPT / OWL / DSA reference code's (128 random 2,048-token
# windows of random C4 training documents, statistics block by block on the pruned model's activations;
# WikiText-2 test perplexity at 2,048, every window of one stream); options given on the command line win.
PROTOCOLS = {"default": {},
             "paper": {"corpus": "c4", "eval_corpus": "wikitext2", "seqlen": 2048, "calib_tokens": 128 * 2048,
                       "eval_tokens": 0, "calib_sampling": "reference"}}
PROTOCOL_CALIBRATION = {"default": "dense", "paper": "sequential"}  # prune and export's --calibration
CALIB_SAMPLINGS = ("consecutive", "reference")


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
    # consecutive: the calibration split's documents joined in order; reference: the reference code's random
    # window of a random document (longer than a window) per window, from every training document of the corpus
    calib_sampling: str = "consecutive"

    def __post_init__(self):
        if self.calib_sampling not in CALIB_SAMPLINGS:  # a hand-edited run.json or pruning.json, say
            raise WorkbenchError(f"unknown calibration sampling '{self.calib_sampling}': use "
                                 f"{' or '.join(CALIB_SAMPLINGS)}")

    def tokens(self, split: str) -> int:
        return {"calibration": self.calib_tokens, "fitness": self.fitness_tokens,
                "evaluation": self.eval_tokens}[split]
