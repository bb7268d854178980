"""A physically smaller model from the dense model, the level database and a structure."""

from __future__ import annotations

import torch

from engine.structured.database import LevelDatabase
from engine.structured.modeling import PrunedLlamaConfig, PrunedLlamaForCausalLM
from engine.structured.structure import Structure

_NOT_COPIED = ("model_type", "architectures", "transformers_version", "auto_map")


def pruned_config(base_config, db: LevelDatabase, structure: Structure) -> PrunedLlamaConfig:
    per_kv = db.shapes.heads // db.shapes.kv_heads
    layer_heads, sizes = [], []
    for i, (a, m) in enumerate(zip(structure.attn, structure.mlp)):
        slot = {kv: j for j, kv in enumerate(db.kept_kv_heads(i, a))}
        layer_heads.append([slot[h // per_kv] for h in db.heads[i][a]])
        sizes.append(db.shapes.kept_neurons(m))
    values = {k: v for k, v in base_config.to_dict().items() if k not in _NOT_COPIED}
    config = PrunedLlamaConfig(**values, layer_heads=layer_heads, layer_intermediate_sizes=sizes)
    config.architectures = [PrunedLlamaForCausalLM.__name__]
    return config


@torch.no_grad()
def build_compact(base, db: LevelDatabase, structure: Structure) -> PrunedLlamaForCausalLM:
    """The pruned model with its own copies of every weight (training it leaves `base` untouched):
    kept q/k/v and gate/up rows from the dense model, o_proj and down_proj from the database."""
    structure.check(db.shapes)
    param = next(base.parameters())
    config = pruned_config(base.config, db, structure)
    config._attn_implementation = base.config._attn_implementation
    with torch.device("meta"):
        model = PrunedLlamaForCausalLM(config)
    model.to_empty(device=param.device).to(param.dtype)
    dense = dict(base.named_parameters(remove_duplicate=False))
    hd = db.shapes.head_dim
    for name, target in model.named_parameters():
        if ".self_attn." not in name and ".mlp." not in name:
            target.copy_(dense[name])
    own = dict(model.named_buffers())
    for name, buffer in base.named_buffers():  # in their own dtype: RoPE's frequencies stay float32
        own[name].data = buffer.clone()
    for i, (a, m) in enumerate(zip(structure.attn, structure.mlp)):
        src, dst = base.model.layers[i], model.model.layers[i]
        heads, o_proj = db.weights(i, "attn", a)
        kv = torch.tensor(db.kept_kv_heads(i, a), dtype=torch.long)
        rows = lambda units: (units[:, None] * hd + torch.arange(hd)).flatten()  # noqa: E731
        dst.self_attn.q_proj.weight.copy_(src.self_attn.q_proj.weight[rows(heads).to(param.device)])
        dst.self_attn.k_proj.weight.copy_(src.self_attn.k_proj.weight[rows(kv).to(param.device)])
        dst.self_attn.v_proj.weight.copy_(src.self_attn.v_proj.weight[rows(kv).to(param.device)])
        dst.self_attn.o_proj.weight.copy_(o_proj)
        neurons, down = db.weights(i, "mlp", m)
        neurons = neurons.to(param.device)
        dst.mlp.gate_proj.weight.copy_(src.mlp.gate_proj.weight[neurons])
        dst.mlp.up_proj.weight.copy_(src.mlp.up_proj.weight[neurons])
        dst.mlp.down_proj.weight.copy_(down)
    model.tie_weights()
    return model.eval()


def parameter_count(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
