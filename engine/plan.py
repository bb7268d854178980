"""The memory plan: from a model's config alone, the peak device and host memory of each phase of a
command, checked against what the machine (or the one asked about) has, before any weight is loaded.

Phases: load, calibration (with Hessians for SparseGPT), caches (weight ranks, allocation samples,
dense reference), candidate forward, block-sequential pruning, evaluation, export. The sizes are those
of the tensors the engine allocates (see engine.pruning, engine.sequential, engine.evaluation), plus
the runtime's own: on a CPU the process's resident memory at the start, on a GPU the CUDA context.

When a phase does not fit, `problems()` says what does not fit and which option would make it fit.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.evaluation import HEAD_TOKENS

GiB = 1 << 30
CUDA_CONTEXT = 1 << 30  # the CUDA runtime's own memory on each GPU, outside torch's allocator
CUDA_HOST = 3 << 29  # host memory of the CUDA libraries once a GPU is used (measured on an H200 box)
SHARD = 5 << 30  # the largest safetensors shard written, and about what loading holds of a file at once
HOST_EXTRA = 300 << 20  # on top of the start: modelling code, tokenizer, corpus, allocator slack
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
# what each command runs, in order
COMMAND_PHASES = {
    "prune": ("load", "calibration", "pruning", "evaluation", "export"),
    "eval": ("load", "evaluation"),
    "allocations": ("load", "calibration", "caches"),
    "search": ("load", "calibration", "caches", "candidate"),
    "tui": ("load", "calibration", "caches", "candidate"),
    "structured": ("load", "calibration", "database", "fine-tune"),
}


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a model instantiated on the meta device."""

    label: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    params: int  # all parameters, tied ones once
    block_linears: tuple[tuple[int, int], ...]  # (out, in) of the 7 linears of one block

    @property
    def block_params(self) -> int:
        return sum(o * i for o, i in self.block_linears)

    @property
    def largest_linear(self) -> int:
        return max(o * i for o, i in self.block_linears)

    @classmethod
    def of(cls, config, label: str) -> ModelShape:
        import torch
        from transformers import AutoModelForCausalLM

        from engine.architecture import check_supported, decoder_blocks

        check_supported(config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        blocks = decoder_blocks(model)
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        linears = tuple(tuple(lin.weight.shape) for lin in blocks[0].linears.values())
        text = getattr(config, "text_config", config)
        return cls(label, len(blocks), text.hidden_size, text.intermediate_size, text.num_attention_heads,
                   text.vocab_size, params, linears)


@dataclass(frozen=True)
class Machine:
    """Where the command runs: `gpus` devices of `gpu_bytes` each (0 GPUs: the CPU), and host memory."""

    gpus: int
    gpu_bytes: int
    host_bytes: int
    start_bytes: int  # host memory the process holds before loading anything

    @property
    def device(self) -> str:
        if not self.gpus:
            return "CPU"
        spread = " (spread with --device-map)" if self.gpus > 1 else ""
        return f"{self.gpus} x {self.gpu_bytes / GiB:.0f} GiB GPU{spread}"

    @classmethod
    def this_one(cls, device: str = "auto", device_map: str | None = None) -> Machine:
        """This machine: its GPUs' free memory (the one asked for, or all of them with a device map)."""
        import torch

        start = resident_bytes()
        host = available_host_bytes() + start
        cuda = str(device).startswith("cuda") or (device in ("auto", None) and torch.cuda.is_available())
        if not cuda:
            return cls(0, 0, host, start)
        if not torch.cuda.is_available():
            raise WorkbenchError(f"device '{device}' asked for, but no CUDA device is visible")
        index = torch.device(device).index if str(device).startswith("cuda:") else 0
        ids = range(torch.cuda.device_count()) if device_map else [index]
        free = min(torch.cuda.mem_get_info(i)[0] for i in ids) + CUDA_CONTEXT  # mem_get_info made the context
        return cls(len(ids), free, host, start)


@dataclass(frozen=True)
class Phase:
    name: str
    device: int  # peak bytes on the busiest device (the host, on a CPU)
    host: int  # peak bytes of host memory (on a CPU, the same as `device`)
    detail: str  # what dominates


@dataclass(frozen=True)
class Plan:
    shape: ModelShape
    command: str
    metric: str
    calibration: str
    dtype_bytes: int
    machine: Machine
    phases: tuple[Phase, ...] = field(default=())

    @property
    def weight_bytes(self) -> int:
        return self.shape.params * self.dtype_bytes

    def peak(self, where: str) -> Phase:
        return max(self.phases, key=lambda p: getattr(p, where))

    def problems(self) -> list[str]:
        """One line per limit exceeded: what does not fit, and the option that would make it fit."""
        out = []
        m = self.machine
        if m.gpus:
            worst = self.peak("device")
            if worst.device + CUDA_CONTEXT > m.gpu_bytes:
                out.append(f"{worst.name} needs {_gib(worst.device + CUDA_CONTEXT)} on a GPU with "
                           f"{_gib(m.gpu_bytes)} ({worst.detail}): {self._remedy(worst)}")
        worst = self.peak("host")
        if worst.host > m.host_bytes:
            out.append(f"{worst.name} needs {_gib(worst.host)} of host memory, {_gib(m.host_bytes)} available "
                       f"({worst.detail}): {self._remedy(worst, host=True)}")
        return out

    def _remedy(self, phase: Phase, host: bool = False) -> str:
        hints = []
        if phase.name in ("calibration", "pruning") and self.metric == "sparsegpt" and self.command == "prune" \
                and self.calibration == "dense":
            hints.append("--calibration sequential (one block's Hessians at a time)")
        if phase.name in ("calibration", "caches", "candidate") and self.metric == "sparsegpt" \
                and self.command != "prune":
            hints.append("--metric wanda (SparseGPT candidates need every Hessian at once)")
        if host:
            return " or ".join(hints + ["a machine with more host memory"])
        per_gpu = self.weight_bytes / max(1, self.machine.gpus)
        if per_gpu > self.machine.gpu_bytes * 0.8:
            need = math.ceil(self.weight_bytes * 2.2 / self.machine.gpu_bytes)
            hints.append(f"--device-map auto over about {need} such GPUs (the weights alone are "
                         f"{_gib(self.weight_bytes)})")
        return " or ".join(hints or ["lower --batch-size, --calib-tokens or --fitness-tokens, or --device-map auto "
                                     "over more GPUs"])

    def table(self) -> str:
        s = self.shape
        lines = [f"memory plan: {self.command} of {s.label} ({s.params / 1e9:.2f}B parameters, "
                 f"{_gib(self.weight_bytes)} of weights at {self.dtype_bytes} bytes), metric {self.metric}, "
                 f"{self.calibration} calibration, on {self.machine.device}",
                 f"{'phase':<12} {'device peak':>12} {'host peak':>12}  what dominates"]
        for p in self.phases:
            device = _gib(p.device + (CUDA_CONTEXT if self.machine.gpus else 0)) if self.machine.gpus else "-"
            lines.append(f"{p.name:<12} {device:>12} {_gib(p.host):>12}  {p.detail}")
        problems = self.problems()
        lines += [f"does not fit: {p}" for p in problems] or ["fits"]
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"model": self.shape.label, "command": self.command, "metric": self.metric,
                "calibration": self.calibration, "params": self.shape.params, "weight_bytes": self.weight_bytes,
                "machine": {"gpus": self.machine.gpus, "gpu_bytes": self.machine.gpu_bytes,
                            "host_bytes": self.machine.host_bytes},
                "phases": [{"name": p.name, "device_bytes": p.device, "host_bytes": p.host, "detail": p.detail}
                           for p in self.phases],
                "fits": not self.problems(), "problems": self.problems()}


def make_plan(shape: ModelShape, command: str, *, metric: str = "wanda", calibration: str = "dense",
              dtype_bytes: int = 4, data: DataConfig = DataConfig(), fitness: str = "ppl",
              machine: Machine) -> Plan:
    """The peak memory of each phase of `command` (see COMMAND_PHASES)."""
    if command not in COMMAND_PHASES:
        raise WorkbenchError(f"no plan for '{command}'; plans exist for {', '.join(COMMAND_PHASES)}")
    s, B, gpus = shape, dtype_bytes, machine.gpus
    share = 1 / gpus if gpus else 1.0  # a model spread over GPUs: each holds its share of the blocks
    weights = s.params * B
    blocks = s.layers * s.block_params
    fp32_block_temp = 4 * s.largest_linear  # scores of the largest linear, in float32
    act = _forward_bytes(s, data.batch_size, data.seqlen, B, head=True)
    act_blocks = _forward_bytes(s, data.batch_size, data.seqlen, B, head=False)  # calibration: no head
    calib_stats = s.layers * sum(i for _, i in s.block_linears) * 4
    hessians = s.layers * _hessians(s) * 4
    ranks = blocks * (2 if max(i for _, i in s.block_linears) < 32768 and metric != "magnitude" else 4)  # int16 per row
    reference = data.fitness_tokens * s.vocab * 2 if fitness == "kl" else 0
    samples = s.layers * data.sample_size * 8
    ranking = fp32_block_temp * 5  # scores, and argsort's values and int64 indices, of one linear
    host_backup = blocks * B

    def phase(name, device_tensors, detail, host_tensors=0, transient=0):
        """`device_tensors` spread over the GPUs (or on the CPU), `transient` on one device at a time."""
        device = int(device_tensors * share + transient)
        if gpus:
            return Phase(name, device, machine.start_bytes + HOST_EXTRA + CUDA_HOST + host_tensors, detail)
        return Phase(name, device, machine.start_bytes + HOST_EXTRA + device + host_tensors, detail)

    masked = metric != "sparsegpt" and calibration == "dense"  # pruned by ranks: they stay while evaluating
    phases = {
        "load": phase("load", weights, "the weights", host_tensors=min(weights, SHARD) if gpus else 0),
        "evaluation": phase("evaluation", weights + (ranks if command == "prune" and masked else 0),
                            "weights and one batch's activations",
                            transient=act + (s.block_params * B if command == "prune" and masked else 0)),
    }
    if command in ("prune", "allocations", "search", "tui"):
        with_h = metric == "sparsegpt" and (calibration == "dense" or command != "prune")
        phases["calibration"] = phase(
            "calibration", weights + calib_stats + (hessians if with_h else 0),
            "every Hessian at once" if with_h else "weights and one batch's activations",
            transient=act_blocks + _hook_bytes(s, data))
        phases["caches"] = phase(
            "caches", weights + calib_stats + (hessians if metric == "sparsegpt" else 0) + ranks,
            "weights, Hessians and weight ranks" if metric == "sparsegpt" else "weights and weight ranks",
            host_tensors=samples + (host_backup if metric == "sparsegpt" else 0), transient=ranking + reference)
        phases["candidate"] = phase(
            "candidate", weights + calib_stats + ranks + (hessians if metric == "sparsegpt" else 0),
            "weights, ranks and one block's pruned copy", host_tensors=samples,
            transient=s.block_params * B + act + reference)
    if command == "structured":
        phases["calibration"] = phase("calibration", weights + calib_stats + hessians, "every Hessian at once",
                                      transient=act_blocks + _hook_bytes(s, data))
        out, cols = max(s.block_linears, key=lambda oi: oi[1])
        phases["database"] = phase("database", weights + calib_stats + hessians,
                                   "every Hessian, one block's float64 OBS state",
                                   transient=8 * (2 * out * cols + 3 * cols * cols))
        trained = s.layers * s.block_params + s.vocab * s.hidden
        tokens = data.batch_size * data.seqlen
        masters = 8 if B < 4 else 0  # a bfloat16 or float16 model's float32 master weights and gradients
        phases["fine-tune"] = phase(
            "fine-tune", weights, "the dense model, a pruned copy with its gradients and AdamW moments"
            + (" and float32 master weights" if masters else ""),
            transient=trained * (2 * B + 8 + masters) + tokens * s.layers * (10 * s.hidden + 4 * s.intermediate) * B
            + min(tokens, HEAD_TOKENS) * s.vocab * 12)
    if command == "prune":  # headless: pruned once and saved, so no host copy of the dense weights is kept
        if calibration == "sequential":
            hidden = data.calib_tokens * s.hidden * B
            block_h = _hessians(s) * 4 if metric == "sparsegpt" else 0
            phases["pruning"] = phase(
                "pruning", weights, "weights, every calibration window's hidden state, one block's statistics",
                transient=hidden + block_h + _sparsegpt_temp(s) + act_blocks)
        else:
            phases["pruning"] = phase(
                "pruning", weights + calib_stats + (hessians if metric == "sparsegpt" else ranks),
                "weights and " + ("every Hessian" if metric == "sparsegpt" else "weight ranks"),
                transient=_sparsegpt_temp(s) if metric == "sparsegpt" else ranking)
        shard = min(weights, SHARD)  # save_pretrained's buffer, then the shard read back to verify it
        phases["export"] = phase("export", weights, "pruned weights, a shard being written or verified",
                                 host_tensors=shard if not gpus else 2 * shard)
    return Plan(shape, command, metric, calibration, B, machine,
                tuple(phases[name] for name in COMMAND_PHASES[command] if name in phases))


def _hessians(s: ModelShape) -> int:
    """Elements of one block's Hessians: q/k/v share one (hidden), o_proj, gate/up share one, down_proj."""
    ins = [i for _, i in s.block_linears]  # q, k, v, o, gate, up, down
    return ins[0] ** 2 + ins[3] ** 2 + ins[4] ** 2 + ins[6] ** 2


def _sparsegpt_temp(s: ModelShape) -> int:
    """SparseGPT on the largest linear: its weight in float32 twice, its Hessian three times (float32)."""
    out, cols = max(s.block_linears, key=lambda oi: oi[1])
    return 4 * (2 * out * cols + 3 * cols * cols)


def _hook_bytes(s: ModelShape, data: DataConfig) -> int:
    """A calibration hook's float32 copy of one linear's input batch, and its square."""
    return 2 * data.batch_size * data.seqlen * max(s.hidden, s.intermediate) * 4


def _forward_bytes(s: ModelShape, batch: int, seqlen: int, B: int, head: bool) -> int:
    """Peak activations of one batch's forward (no gradients): a block's hidden states, attention and MLP
    intermediates, and (`head`) the language-model head on HEAD_TOKENS positions at a time: the logits in
    float32 and the loss's log-softmax of them (plus the cast from a 16-bit dtype)."""
    tokens = batch * seqlen
    block = tokens * (6 * s.hidden + 3 * s.intermediate) * B
    logits = min(tokens, HEAD_TOKENS) * s.vocab * (8 + (B if B != 4 else 0)) if head else 0
    return max(block, logits) + tokens * s.hidden * B * 2


def parse_size(text: str) -> int:
    """'80GB', '80G', '141GiB', '512g' -> bytes (powers of 1024, as GPU memory is quoted)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise WorkbenchError(f"not a size: {text!r} (use e.g. 80GB)")
    return int(float(match[1]) * 1024 ** " kmgt".index(match[2] or " "))


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_host_bytes() -> int:
    """MemAvailable (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"
