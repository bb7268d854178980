"""The level database: per block and level, which heads / neurons stay and their OBS-updated weights.

Built once from calibration Hessians (ZipLM-style): units (a head's o_proj input columns, a neuron's
down_proj input column) are removed greedily by the least output error under the layer-input Hessian,
and each removal updates the remaining columns (optimal brain surgeon). Because removals only add
up, the kept units of a level contain those of every higher level. Stored as one safetensors file
per block plus index.json, written last (the database counts as built once it exists):

    db/block-007.safetensors   attn.L.o_proj, attn.L.heads, mlp.L.down_proj, mlp.L.neurons per level L
    db/index.json              shapes, damping, and per block the kept heads per attention level
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.architecture import decoder_blocks
from engine.choices import LEVEL_DATABASE_FORMAT as DB_FORMAT
from engine.errors import WorkbenchError
from engine.files import check_safetensors, read_json
from engine.progress import Progress, no_progress
from engine.saving import atomic_file, write_atomic
from engine.structured.structure import Shapes, Structure

DAMPING = 1e-2
NEURON_STEPS = 128  # the MLP's neurons are removed in about this many greedy steps per block


def estimate_bytes(shapes: Shapes, itemsize: int) -> int:
    """Disk size of a database for these shapes (weights of every level; indices are small)."""
    head_cols = sum(shapes.heads - level for level in range(shapes.heads + 1)) * shapes.head_dim
    neuron_cols = sum(shapes.kept_neurons(level) for level in range(shapes.mlp_levels + 1))
    return shapes.layers * shapes.hidden * (head_cols + neuron_cols) * itemsize


def build_database(session, folder: str | Path, shapes: Shapes, progress: Progress = no_progress,
                   check=lambda *a: None) -> LevelDatabase:
    """Calibrate (with Hessians) and write the levels of every block that is not yet in `folder` whole (an
    interrupted build's, or a damaged one's), then the index. `check` is called between blocks and may raise to
    stop."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".block-*.safetensors.*"):  # the temporary file of a build that was killed
        stale.unlink()
    blocks = decoder_blocks(session.model)
    todo = [b for b in blocks if _damage(_block_path(folder, b.index), shapes)]
    heads: dict[int, dict[int, list[int]]] = {}
    if todo:
        with session.lock:  # the dense weights are read: no pruning of this session meanwhile
            session.restore()
            stats = session.calibration(hessians=True, progress=progress)
            _build_blocks(todo, stats, folder, shapes, progress, check)
    for block in blocks:
        with safe_open(_block_path(folder, block.index), "pt") as fh:
            heads[block.index] = {level: fh.get_tensor(f"attn.{level}.heads").tolist()
                                  for level in range(shapes.heads + 1)}
    index = {"format": DB_FORMAT, "shapes": asdict(shapes), "damping": DAMPING,
             "heads": [heads[b.index] for b in blocks]}
    write_atomic(folder / "index.json", json.dumps(index))
    return LevelDatabase(folder)


def _build_blocks(todo, stats, folder: Path, shapes: Shapes, progress: Progress, check) -> None:
    for i, block in enumerate(todo):
        check()
        prefix = f"model.layers.{block.index}."
        o_proj, down = block.linears[prefix + "self_attn.o_proj"], block.linears[prefix + "mlp.down_proj"]
        tensors = {}
        head_levels = obs_levels(o_proj.weight, stats.hessians[prefix + "self_attn.o_proj"], shapes.head_dim,
                                 [shapes.heads - level for level in range(shapes.heads + 1)], step=1)
        for level, (kept, weight) in enumerate(head_levels):
            tensors[f"attn.{level}.heads"], tensors[f"attn.{level}.o_proj"] = kept, weight
        counts = [shapes.kept_neurons(level) for level in range(shapes.mlp_levels + 1)]
        neuron_levels = obs_levels(down.weight, stats.hessians[prefix + "mlp.down_proj"], 1, counts,
                                   step=max(1, shapes.intermediate // NEURON_STEPS))
        for level, (kept, weight) in enumerate(neuron_levels):
            tensors[f"mlp.{level}.neurons"], tensors[f"mlp.{level}.down_proj"] = kept, weight
        _save_atomic(tensors, _block_path(folder, block.index))
        progress("level database", i + 1, len(todo))


@torch.no_grad()
def obs_levels(weight: torch.Tensor, hessian: torch.Tensor, group: int, keep_counts: list[int],
               step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Remove input-column groups of `weight` ([out, in]) greedily down to each count in `keep_counts`
    (descending), `step` groups at a time, with an OBS update of the remaining columns.

    Returns, per count: the kept group indices and the weight restricted to their columns."""
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += DAMPING * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    h_inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    alive = torch.arange(w.shape[1] // group, device=w.device)
    out = []
    for count in keep_counts:
        # From here on only the alive units' columns are read: w and h_inv shrink to them (a removed column's
        # row and column of h_inv are zero after its update), so every step costs less than the one before.
        columns = torch.arange(w.shape[1], device=w.device).view(-1, group)  # [alive units, group]
        live = torch.ones(len(alive), dtype=torch.bool, device=w.device)
        while int(live.sum()) > count:
            cols = columns[live]
            blocks = h_inv[cols[:, :, None], cols[:, None, :]]  # [live, group, group]
            ws = w[:, cols].transpose(0, 1)  # [live, out, group]
            errors = ((ws @ torch.linalg.inv(blocks)) * ws).sum((1, 2))
            n = min(step, len(cols) - count)
            picked = torch.topk(errors, n, largest=False).indices
            s = cols[picked].flatten()
            inv_ss = torch.linalg.inv(h_inv[s][:, s])
            w -= (w[:, s] @ inv_ss) @ h_inv[s, :]
            h_inv -= h_inv[:, s] @ inv_ss @ h_inv[s, :]
            w[:, s] = 0
            live[live.nonzero().flatten()[picked]] = False
        alive, kept = alive[live], columns[live].flatten()
        w, h_inv = w[:, kept], h_inv[kept][:, kept]
        out.append((alive.cpu().clone(), w.to(weight.dtype).cpu().contiguous()))
    return out


class LevelDatabase:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "index.json"
        if not path.exists():
            raise WorkbenchError(f"no level database in {self.folder}: run `dsa-workbench structured build-db` first")
        index = read_json(path, "level database index")
        if not isinstance(index, dict) or index.get("format") != DB_FORMAT:
            raise WorkbenchError(f"{path} is not a dsa-workbench level database")
        try:
            self.shapes = Shapes(**index["shapes"])
            self.heads = [{int(k): v for k, v in block.items()} for block in index["heads"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WorkbenchError(f"{path} is corrupt: {exc}") from exc
        levels = set(range(self.shapes.heads + 1))
        if len(self.heads) != self.shapes.layers or any(set(block) != levels for block in self.heads):
            raise WorkbenchError(f"{path} is corrupt: it lacks blocks or attention levels")
        for block in range(self.shapes.layers):
            damage = _damage(_block_path(self.folder, block), self.shapes)
            if damage:
                raise WorkbenchError(f"{damage}; {self.rebuild}")

    @property
    def rebuild(self) -> str:
        return f"`dsa-workbench structured build-db --run {self.folder.parent}` builds what is damaged again"

    def weights(self, block: int, kind: str, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept unit indices, OBS-updated o_proj / down_proj weight over their columns)."""
        unit, name = ("heads", "o_proj") if kind == "attn" else ("neurons", "down_proj")
        path = _block_path(self.folder, block)
        try:
            with safe_open(path, "pt") as fh:
                return fh.get_tensor(f"{kind}.{level}.{unit}"), fh.get_tensor(f"{kind}.{level}.{name}")
        except SafetensorError as exc:
            raise WorkbenchError(f"{path} is damaged ({exc}); {self.rebuild}") from exc

    def kept_kv_heads(self, block: int, level: int) -> list[int]:
        per_kv = self.shapes.heads // self.shapes.kv_heads
        return sorted({h // per_kv for h in self.heads[block][level]})

    def block_params(self, structure: Structure) -> list[int]:
        """Linear parameters each block keeps under `structure`."""
        s = self.shapes
        out = []
        for i, (a, m) in enumerate(zip(structure.attn, structure.mlp)):
            attn = 2 * s.hidden * s.head_dim * (len(self.heads[i][a]) + len(self.kept_kv_heads(i, a)))
            out.append(attn + 3 * s.hidden * s.kept_neurons(m))
        return out

    def kept_fraction(self, structure: Structure) -> float:
        return sum(self.block_params(structure)) / self.shapes.decoder_params

    def block_fractions(self, structure: Structure) -> tuple[float, ...]:
        dense = self.shapes.attn_params + self.shapes.mlp_params
        return tuple(p / dense for p in self.block_params(structure))


def _damage(path: Path, shapes: Shapes) -> str | None:
    """What is wrong with a block's file; None when it is whole and holds every level."""
    try:
        check_safetensors(path)
        with safe_open(path, "pt") as fh:
            names = set(fh.keys())
    except (WorkbenchError, SafetensorError) as exc:
        return str(exc)
    expected = {f"{kind}.{level}.{name}" for kind, levels, units in
                (("attn", shapes.heads, ("heads", "o_proj")), ("mlp", shapes.mlp_levels, ("neurons", "down_proj")))
                for level in range(levels + 1) for name in units}
    missing = len(expected - names)
    return f"{path} lacks {missing} of its {len(expected)} tensors" if missing else None


def _block_path(folder: Path, index: int) -> Path:
    return folder / f"block-{index:03d}.safetensors"


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_file(path) as tmp:
        save_file(tensors, tmp)
