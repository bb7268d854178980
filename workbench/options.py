"""Turning parsed command-line options into engine settings (shared by the commands; no torch)."""

from __future__ import annotations

from engine.data_config import DataConfig
from engine.errors import WorkbenchError


def data_config(args) -> DataConfig:
    flags = ("seqlen", "calib_tokens", "eval_tokens", "fitness_tokens", "batch_size")
    values = {f: getattr(args, f) for f in flags if hasattr(args, f)}
    for flag, value in values.items():
        if value < 1:
            raise WorkbenchError(f"--{flag.replace('_', '-')} must be positive (got {value})")
    return DataConfig(corpus=args.corpus, seed=args.seed, **values)


def devices(spec: str | None) -> list[str] | None:
    """--devices: None (one device), 'all' (every visible GPU) or a comma-separated list."""
    if spec is None:
        return None
    if spec == "all":
        import torch

        if not torch.cuda.is_available():
            raise WorkbenchError("--devices all: no CUDA device is visible")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [d.strip() for d in spec.split(",") if d.strip()]
