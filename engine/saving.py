"""Write a model folder (or any output folder) atomically: everything goes to a temporary sibling, then one rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from engine.errors import WorkbenchError
from engine.progress import Progress, no_progress

RECIPE_NAME = "pruning.json"


def refuse_existing(out: str | Path, force: bool) -> Path:
    """`out` as a path; one line if it exists and `force` was not given (every writer's first check)."""
    out = Path(out).expanduser()
    if out.exists() and not force:
        raise WorkbenchError(f"output {out} already exists (use --force to replace it)")
    return out


def check_output(out: str | Path, force: bool) -> Path:
    """Refuse an existing output unless `force`; make sure its parent can be written."""
    out = refuse_existing(out, force)
    if out.exists() and not out.is_dir():
        raise WorkbenchError(f"output {out} exists and is not a folder")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise WorkbenchError(f"cannot write to {parent}")
    return out


def save_model_folder(model, tokenizer, out: str | Path, recipe: dict, *, force: bool = False,
                      dtype=None, max_shard_size: str | int = "5GB", sparse_format: str = "dense",
                      verify: Callable[[Path], None] | None = None, progress: Progress = no_progress) -> Path:
    """save_pretrained (sharded safetensors + index) + tokenizer + pruning.json into a temp folder,
    `verify(temp)` on it, then one rename. Nothing is left at `out` if any step fails or is interrupted.

    `progress` hears "writing" (0 of 1, then 1 of 1 once the files are written) before the verification.
    `dtype` (a torch dtype) converts the saved tensors, not the model in memory; `sparse_format`
    "compressed-tensors" stores the linears as bitmask-compressed tensors (see engine.compressed)."""
    out = check_output(out, force)
    check_disk_space(out.parent, model, dtype)
    progress("writing", 0, 1)
    with atomic_folder(out) as tmp:
        if sparse_format == "compressed-tensors":
            if dtype is not None:
                raise WorkbenchError("the compressed-tensors format keeps the model's dtype: drop --out-dtype")
            from engine.compressed import save_compressed

            save_compressed(model, tmp, recipe["achieved"]["sparsity"], recipe["pattern"], max_shard_size)
        else:
            state = None if dtype is None else {k: v.to(dtype) for k, v in model.state_dict().items()}
            model.save_pretrained(tmp, state_dict=state, max_shard_size=max_shard_size)
        if dtype is not None:  # save_pretrained records the in-memory dtype; record the saved one
            config = json.loads((tmp / "config.json").read_text())
            config["dtype"] = str(dtype).removeprefix("torch.")
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        (tmp / RECIPE_NAME).write_text(json.dumps(recipe, indent=2) + "\n")
        progress("writing", 1, 1)
        if verify is not None:
            verify(tmp)
    return out


@contextmanager
def atomic_file(path: Path):
    """A new temporary sibling of `path` to write. When the block ends normally it becomes `path` in one rename,
    with the permissions a new file gets; on any error or interrupt it is deleted and `path` is untouched."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private, and a writer may have replaced it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path`, synced to disk, all or nothing."""
    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def atomic_folder(out: Path):
    """A new temporary sibling of `out` to fill. When the block ends normally it becomes `out` in one rename (an
    old `out` moves aside first, then goes); on any error or interrupt it is deleted and `out` is untouched.
    Temporary folders of killed writers to `out` are deleted first."""
    remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the output is an ordinary folder
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def folder_bytes(folder: Path) -> int:
    """Bytes of the files directly in `folder` (a model folder, a level database)."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def remove_stale_temps(out: Path) -> None:
    """Delete temporary folders that killed exports to `out` left behind (their process is gone)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*-*"):
        pid = tmp.name[len(f".{out.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_disk_space(folder: Path, model, dtype=None) -> None:
    """Refuse to start writing when the weights cannot fit (with 5% to spare)."""
    item = (lambda p: dtype.itemsize) if dtype is not None else (lambda p: p.element_size())  # noqa: E731
    tensors = {id(p): p for p in model.state_dict().values()}  # tied weights once
    need = int(sum(p.numel() * item(p) for p in tensors.values()) * 1.05)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise WorkbenchError(f"not enough disk space in {folder}: {need / 2**30:.2f} GiB needed, "
                             f"{free / 2**30:.2f} GiB free")


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022

