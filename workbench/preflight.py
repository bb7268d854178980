"""The memory plan every command that loads a model runs first, and the `plan` command itself."""

from __future__ import annotations

from dataclasses import replace

from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.loading import DEFAULT_MODEL_LABEL, model_config, resolve_device, resolve_dtype
from engine.plan import DTYPE_BYTES, Machine, ModelShape, Plan, make_plan, parse_size
from workbench.console import print_result
from workbench.options import calibration_mode, data_config


def plan_for(args, command: str, source: str | None, metric: str = "wanda", calibration: str = "dense",
             fitness: str = "ppl", machine: Machine | None = None, data: DataConfig | None = None) -> Plan:
    """The plan of `command` on `source` with the options in `args` (data settings: `data`, else args')."""
    config = model_config(source, getattr(args, "trust_remote_code", False))
    shape = ModelShape.of(config, source or DEFAULT_MODEL_LABEL)
    device_map = getattr(args, "device_map", None)
    machine = machine or Machine.this_one(args.device, device_map)
    gpu = machine.gpus > 0
    if args.dtype in (None, "auto"):
        dtype_bytes = 2 if gpu else 4
    else:
        dtype_bytes = DTYPE_BYTES.get(args.dtype) or resolve_dtype(args.dtype, resolve_device("cpu")).itemsize
    return make_plan(shape, command, metric=metric, calibration=calibration, dtype_bytes=dtype_bytes,
                     data=data or data_config(args), fitness=fitness, machine=machine)


def check_plan(args, command: str, source: str | None, **what) -> None:
    """Stop at once, in one line, when the command will not fit (unless --ignore-plan)."""
    if getattr(args, "ignore_plan", False):
        return
    problems = plan_for(args, command, source, **what).problems()
    if problems:
        raise WorkbenchError(f"will not fit: {problems[0]} (see `dsa-workbench plan`; --ignore-plan to try anyway)")


def plan(args) -> int:
    machine = None
    if args.gpus is not None or args.gpu_memory is not None or args.host_memory is not None:
        here = Machine.this_one("cpu")
        gpus = args.gpus if args.gpus is not None else (1 if args.gpu_memory else 0)
        if gpus and args.gpu_memory is None:
            raise WorkbenchError("--gpus needs --gpu-memory (e.g. 80GB)")
        machine = replace(here, gpus=gpus, gpu_bytes=parse_size(args.gpu_memory) if gpus else 0,
                          host_bytes=parse_size(args.host_memory) if args.host_memory else here.host_bytes)
    result = plan_for(args, args.planned, args.model, args.metric, calibration_mode(args), args.fitness, machine)
    print_result(args, result.to_json(), result.table())
    return 0
