"""The compressed-tensors sparse layout (bitmask, or 2:4 bitmask for 2:4 masks), via the `sparse` extra.

The weights of every linear but lm_head are stored as non-zero values, a packed bitmask and row
offsets, with the sparsity config in config.json, as compressed-tensors (<= 0.12, the last releases
with sparse compressors) and the inference servers that read it expect."""

from __future__ import annotations

from pathlib import Path

from engine.errors import WorkbenchError



def _compressor(sparsity: float, pattern: str | None):
    try:
        from compressed_tensors.compressors import ModelCompressor
        from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig
    except ImportError as exc:
        raise WorkbenchError("the compressed-tensors format needs the extra: "
                             "pip install 'dsa-workbench[sparse]'") from exc
    config = (Sparse24BitMaskConfig if pattern == "2:4" else BitmaskConfig)(
        global_sparsity=sparsity, sparsity_structure=pattern or "unstructured", targets=["Linear"],
        ignore=["lm_head"])
    return ModelCompressor(sparsity_config=config)


def save_compressed(model, folder: Path, sparsity: float, pattern: str | None, max_shard_size) -> None:
    """save_pretrained of the compressed state dict, and the sparsity config into config.json."""
    compressor = _compressor(sparsity, pattern)
    model.save_pretrained(folder, state_dict=compressor.compress(model), max_shard_size=max_shard_size)
    compressor.update_config(str(folder))


def load_compressed(folder: Path, dtype):
    """A dense model rebuilt from a compressed-tensors folder (for verification)."""
    from compressed_tensors.compressors import ModelCompressor
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    ModelCompressor.from_pretrained(str(folder)).decompress(str(folder), model)
    model.tie_weights()  # decompression replaces the embedding, which unties a tied lm_head
    return model
