"""Decoder blocks and their linear layers for Llama-family models."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from engine.errors import WorkbenchError

SUPPORTED_MODEL_TYPES = ("llama", "dsa_pruned_llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")

# The seven linears of a decoder block, by path inside the block.
LINEAR_PATHS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)

# Linears that read the same input tensor share calibration statistics.
INPUT_GROUP = {
    "self_attn.q_proj": "self_attn.q_proj",
    "self_attn.k_proj": "self_attn.q_proj",
    "self_attn.v_proj": "self_attn.q_proj",
    "self_attn.o_proj": "self_attn.o_proj",
    "mlp.gate_proj": "mlp.gate_proj",
    "mlp.up_proj": "mlp.gate_proj",
    "mlp.down_proj": "mlp.down_proj",
}


@dataclass(frozen=True)
class Block:
    """One decoder block: its index, its module and its linears by full module name."""

    index: int
    linears: dict[str, nn.Linear]
    module: nn.Module

    @property
    def params(self) -> int:
        return sum(lin.weight.numel() for lin in self.linears.values())


def block_means(blocks: list[Block], per_linear: dict[str, float]) -> list[float]:
    """Parameter-weighted mean of a per-linear quantity (ratio, sparsity) over each block."""
    return [sum(per_linear[n] * lin.weight.numel() for n, lin in b.linears.items()) / b.params for b in blocks]


def check_supported(config) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        arch = ", ".join(getattr(config, "architectures", None) or []) or "unknown"
        raise WorkbenchError(
            f"unsupported architecture: {model_type} ({arch}); "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def decoder_blocks(model: nn.Module) -> list[Block]:
    """The decoder blocks of a causal LM, each with its seven linears."""
    check_supported(model.config)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise WorkbenchError(f"unsupported architecture: {type(model).__name__} has no model.layers")
    blocks = []
    for i, layer in enumerate(layers):
        linears = {}
        for path in LINEAR_PATHS:
            module = layer.get_submodule(path) if _has(layer, path) else None
            if not isinstance(module, nn.Linear):
                raise WorkbenchError(
                    f"unsupported architecture: block {i} of {type(model).__name__} has no linear {path}"
                )
            linears[f"model.layers.{i}.{path}"] = module
        blocks.append(Block(i, linears, layer))
    return blocks


def linear_path(name: str) -> str:
    """'model.layers.3.mlp.up_proj' -> 'mlp.up_proj'."""
    return name.split(".", 3)[3]


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True
