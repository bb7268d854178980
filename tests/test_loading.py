"""Model loading: folders, architectures, devices, and the errors a user sees."""

from __future__ import annotations

import pytest

from engine.architecture import LINEAR_PATHS, decoder_blocks
from engine.errors import WorkbenchError
from engine.loading import load_model, resolve_dtype, resolve_device


def test_tiny_folder_loads_and_exposes_seven_linears_per_block(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    blocks = decoder_blocks(loaded.model)
    assert len(blocks) == 3
    assert all(len(b.linears) == len(LINEAR_PATHS) for b in blocks)
    assert loaded.fingerprint.startswith("folder-sha256:")
    assert str(loaded.dtype) == "torch.float32"


def test_missing_path(tmp_path):
    with pytest.raises(WorkbenchError, match="no such file or folder"):
        load_model(str(tmp_path / "missing"))


def test_non_model_folder(tmp_path):
    with pytest.raises(WorkbenchError, match="not a model folder"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(WorkbenchError, match="unsupported architecture: gpt2"):
        load_model(str(tmp_path))


def test_unreachable_hub_id_says_so():
    with pytest.raises(WorkbenchError, match="hub"):
        load_model("some-org/some-model-that-is-not-here")


def test_device_and_dtype_resolution():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(WorkbenchError):
        resolve_dtype("int3", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(WorkbenchError, match="no CUDA"):
            resolve_device("cuda")


class _Tokenizer:
    """Tokenizes any text as [first, 7]: BOS first or not."""

    bos_token_id = 2

    def __init__(self, first):
        self.first = first

    def __call__(self, text):
        return type("Encoding", (), {"input_ids": [self.first, 7]})()


@pytest.mark.parametrize("add_bos", [True, False])
def test_a_gguf_tokenizer_that_drops_the_files_bos_is_refused(tmp_path, add_bos):
    # transformers 5.17 reads Gemma 3's GGUF tokenizer without the BOS the file asks for (see check_gguf_tokenizer)
    from gguf import GGUFWriter

    from engine.loading import check_gguf_tokenizer

    path = tmp_path / "m.gguf"
    writer = GGUFWriter(str(path), "gemma3")
    writer.add_add_bos_token(add_bos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    check_gguf_tokenizer(path, _Tokenizer(first=2))
    if add_bos:
        with pytest.raises(WorkbenchError, match="no BOS token where the file asks for one"):
            check_gguf_tokenizer(path, _Tokenizer(first=818))
    else:
        check_gguf_tokenizer(path, _Tokenizer(first=818))
