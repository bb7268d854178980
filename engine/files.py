"""Reading the files the workbench loads, with one-line errors that name the file.

A truncated download, a killed write or a disk error must never surface as a traceback from deep inside
a library: JSON is parsed here, and every safetensors file's header is checked against its size before
anything reads tensors from it. No torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from engine.errors import WorkbenchError

MAX_HEADER = 100 << 20  # safetensors' own limit on the header size


def read_json(path: Path, what: str = "file"):
    """The parsed JSON of `path`, or a WorkbenchError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkbenchError(f"missing {what}: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkbenchError(f"{path} is truncated or corrupt (not valid JSON: {exc})") from exc
    except OSError as exc:
        raise WorkbenchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def jsonl_rows(path: Path, valid, expected: str):
    """(line number, object) of every non-blank line of a JSON-lines file; a WorkbenchError naming the line
    where one is not JSON or `valid(object)` is false (`expected` says what a line should hold)."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkbenchError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not valid(row):
                raise WorkbenchError(f"{path}:{lineno}: expected {expected}")
            yield lineno, row


def check_safetensors(path: Path) -> None:
    """The file's header parses and its tensors end exactly at the end of the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _corrupt(path, f"{size} bytes, not even a header")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER, size - 8):
                raise _corrupt(path, f"header of {length} bytes in a file of {size}")
            header = json.loads(fh.read(length))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _corrupt(path, "the header is not valid JSON") from exc
    except OSError as exc:
        raise WorkbenchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a table of tensors")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and "data_offsets" in t]
    if len(ends) != len([k for k in header if k != "__metadata__"]):
        raise _corrupt(path, "a tensor entry has no data offsets")
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        raise _corrupt(path, f"{size} bytes, the header describes {expected}")


def check_model_folder(folder: Path) -> None:
    """config.json, the shard index and every weight file of a model folder are whole."""
    folder = Path(folder)
    config = read_json(folder / "config.json", "model config")
    if not isinstance(config, dict):
        raise WorkbenchError(f"{folder / 'config.json'} is not a model config")
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = read_json(index, "shard index")
        shards = sorted(set((data.get("weight_map") or {}).values())) if isinstance(data, dict) else []
        if not shards:
            raise WorkbenchError(f"{index} is corrupt: it names no weight files")
        for shard in shards:
            if not (folder / shard).is_file():
                raise WorkbenchError(f"{folder / shard} is missing (named in {index.name}): download it again")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def _corrupt(path: Path, detail: str) -> WorkbenchError:
    return WorkbenchError(f"{path} is truncated or corrupt ({detail}): write or download it again")
