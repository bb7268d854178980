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


def cluster_options(args) -> tuple[str | None, int | None]:
    """--cluster and --workers, checked together."""
    if args.workers is not None and not args.cluster:
        raise WorkbenchError("--workers needs --cluster (e.g. --cluster local)")
    if args.workers is not None and args.workers < 1:
        raise WorkbenchError(f"--workers must be at least 1 (got {args.workers})")
    if args.cluster and getattr(args, "device_map", None):
        raise WorkbenchError("--cluster and --device-map do not go together: each Ray worker holds a whole model")
    return args.cluster, args.workers
