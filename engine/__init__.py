"""dsa-workbench engine: model loading, calibration, metrics, allocations, pruning, evaluation, and
structured (DarwinLM-style) pruning.

Plain Python and torch; no UI. Long steps report through a `progress(stage, done, total)` callback.
Importing it registers the structurally pruned Llama with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained` loads folders that `dsa-workbench structured export` wrote.
"""

from engine.errors import InvalidFunctionError, WorkbenchError
from engine.structured.modeling import register as _register

_register()

__all__ = ["InvalidFunctionError", "WorkbenchError"]
