"""Turning parsed command-line options into engine settings (shared by the commands; no torch)."""

from __future__ import annotations

from engine.data_config import PROTOCOL_CALIBRATION, PROTOCOLS, DataConfig
from engine.errors import WorkbenchError


def data_config(args) -> DataConfig:
    """The data options, over the --protocol preset's values, over the defaults."""
    flags = ("corpus", "eval_corpus", "seqlen", "calib_tokens", "eval_tokens", "fitness_tokens", "batch_size",
             "calib_sampling")
    given = {f: getattr(args, f) for f in flags if getattr(args, f, None) is not None}
    values = {**PROTOCOLS[getattr(args, "protocol", "default")], **given}
    for flag, value in values.items():
        if isinstance(value, int) and value < (0 if flag == "eval_tokens" else 1):
            raise WorkbenchError(f"--{flag.replace('_', '-')} must be positive (got {value})")
    if values.get("eval_tokens") == 0 and not values.get("eval_corpus"):
        raise WorkbenchError("--eval-tokens all needs --eval-corpus: the held-out documents of a corpus are "
                             "evaluated on a number of tokens")
    return DataConfig(seed=args.seed, **values)


def calibration_mode(args) -> str:
    """prune and export's --calibration, over the --protocol preset's (paper: sequential)."""
    return args.calibration or PROTOCOL_CALIBRATION[getattr(args, "protocol", "default")]


def cluster_options(args) -> tuple[str | None, int | None]:
    """--cluster and --workers, checked together."""
    if args.workers is not None and not args.cluster:
        raise WorkbenchError("--workers needs --cluster (e.g. --cluster local)")
    if args.workers is not None and args.workers < 1:
        raise WorkbenchError(f"--workers must be at least 1 (got {args.workers})")
    if args.cluster and getattr(args, "device_map", None):
        raise WorkbenchError("--cluster and --device-map do not go together: each Ray worker holds a whole model")
    return args.cluster, args.workers
