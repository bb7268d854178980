"""dsa-workbench engine: model loading, calibration, metrics, allocations, pruning, evaluation, searches,
and structured (DarwinLM-style) pruning.

Plain Python and torch; no UI. Long steps report through a `progress(stage, done, total)` callback.
`import engine` is light (no torch, no transformers); each module imports what it needs.

Folders written by `dsa-workbench structured export` hold a model type of our own: `import engine.structured`
registers it with transformers' Auto classes, after which `AutoModelForCausalLM.from_pretrained` loads them
(the workbench's own loading does this by itself).
"""

from engine.errors import InvalidFunctionError, WorkbenchError

__all__ = ["InvalidFunctionError", "WorkbenchError"]
