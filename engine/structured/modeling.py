"""A Llama whose blocks keep different numbers of attention heads and MLP neurons.

Stock Llama configs give every block the same shapes, so a structurally pruned model needs its own
config (per-block kept heads and MLP widths) and model class. Both are registered with transformers'
Auto classes when `engine` is imported, so `AutoModelForCausalLM.from_pretrained(folder)` loads an
exported model without remote code.

Per block the config holds `layer_heads`: for each kept query head, the index of the key/value head
it reads (key/value heads no query head reads are removed). Query heads of one group need not be
kept together, so the attention gathers key/value heads by that index instead of repeating them.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import (ALL_ATTENTION_FUNCTIONS, LlamaMLP, apply_rotary_pos_emb,
                                                      eager_attention_forward)

MODEL_TYPE = "dsa_pruned_llama"

# A block may keep no neurons or no heads: its empty linears are fine, torch's init warning is noise.
warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")


class PrunedLlamaConfig(LlamaConfig):
    """LlamaConfig plus `layer_heads` (per block, the key/value index of each kept query head) and
    `layer_intermediate_sizes` (per block, the kept MLP width)."""

    model_type = MODEL_TYPE


class PrunedLlamaAttention(nn.Module):
    def __init__(self, config: PrunedLlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.kv_of_head = [int(k) for k in config.layer_heads[layer_idx]]
        self.num_heads = len(self.kv_of_head)
        self.num_kv_heads = max(self.kv_of_head) + 1 if self.kv_of_head else 0
        self.num_key_value_groups = 1  # key/value heads are gathered per query head in forward
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self._index: dict[torch.device, torch.Tensor] = {}

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        cache = kwargs.pop("past_key_values", cache)  # the keyword's name before transformers 5
        batch, seq = hidden_states.shape[:-1]
        if self.num_heads == 0:
            if cache is not None:  # one element per position: transformers reads the cached length from block 0
                mark = hidden_states.new_ones(batch, 1, seq, 1)
                cache.update(mark, mark, self.layer_idx)
            return self.o_proj(hidden_states.new_zeros(batch, seq, 0)), None
        q = self.q_proj(hidden_states).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        index = self._index.get(k.device)
        if index is None:
            index = self._index[k.device] = torch.tensor(self.kv_of_head, device=k.device)
        k, v = k.index_select(1, index), v.index_select(1, index)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attention(self, q, k, v, attention_mask, scaling=self.scaling,
                                 dropout=self.attention_dropout if self.training else 0.0, **kwargs)
        return self.o_proj(out.reshape(batch, seq, -1).contiguous()), weights


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig):
        super().__init__(config)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = PrunedLlamaAttention(config, i)
            mlp_config = copy.copy(config)
            mlp_config.intermediate_size = int(config.layer_intermediate_sizes[i])
            layer.mlp = LlamaMLP(mlp_config)
        self.post_init()


def register() -> None:
    """Make AutoConfig / AutoModelForCausalLM know the pruned model type (idempotent)."""
    try:
        AutoConfig.register(MODEL_TYPE, PrunedLlamaConfig)
        AutoModelForCausalLM.register(PrunedLlamaConfig, PrunedLlamaForCausalLM)
    except ValueError:  # already registered
        pass
