"""Token windows through a model's decoder blocks one block at a time, as the reference Wanda and SparseGPT
code calibrates: every window's hidden state is held between blocks, so one block's statistics (and
Hessians) are all that must live at once, and a block can be changed before the next one sees its output.

The keyword arguments the model passes its blocks (rotary embeddings, masks; they can differ per block,
e.g. sliding-window layers) are recorded in one ordinary forward per batch shape, then replayed.
"""

from __future__ import annotations

import torch

from engine.architecture import Block
from engine.evaluation import input_device
from engine.progress import Progress, no_progress


class _Captured(Exception):
    """Stops a forward once the first block's input is recorded."""


class BlockRunner:
    def __init__(self, model, blocks: list[Block], windows: torch.Tensor, batch_size: int):
        self.model = model
        self.blocks = blocks
        self.batches = list(windows.split(batch_size))
        self.hidden: list[torch.Tensor] = []  # per batch: the input of the next block to run
        self._kwargs: dict[int, list[dict]] = {}  # batch size -> per block, its keyword arguments

    @torch.no_grad()
    def start(self) -> None:
        """The first block's input for every batch (and every block's keyword arguments)."""
        self.hidden = []
        for batch in self.batches:
            record = batch.shape[0] not in self._kwargs
            kwargs: list[dict] = [{} for _ in self.blocks]
            handles = [b.module.register_forward_pre_hook(self._recorder(i, kwargs, record), with_kwargs=True)
                       for i, b in enumerate(self.blocks)]
            try:
                self.model.model(input_ids=batch.to(input_device(self.model)), use_cache=False)
            except _Captured:
                pass
            finally:
                for handle in handles:
                    handle.remove()
            if record:
                self._kwargs[batch.shape[0]] = kwargs

    def _recorder(self, index: int, kwargs: list[dict], record: bool):
        def hook(module, args, hook_kwargs):
            if index == 0:
                self.hidden.append(args[0] if args else hook_kwargs["hidden_states"])
                if not record:
                    raise _Captured()
            kwargs[index] = {k: v for k, v in hook_kwargs.items() if k != "hidden_states"}
        return hook

    @torch.no_grad()
    def run(self, index: int, advance: bool = True, progress: Progress = no_progress) -> None:
        """Block `index` over every batch; with `advance` its outputs become the inputs of the next block,
        else they are dropped (a pass for the hooks' sake)."""
        module = self.blocks[index].module
        for j, hidden in enumerate(self.hidden):
            out = module(hidden, **self._kwargs[hidden.shape[0]][index])
            if advance:
                self.hidden[j] = out[0] if isinstance(out, tuple) else out
            progress(f"block {index}", j + 1, len(self.hidden))
