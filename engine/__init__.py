"""dsa-workbench engine: model loading, calibration, metrics, allocations, pruning, evaluation.

Plain Python and torch; no UI. Long steps report through a `progress(stage, done, total)` callback.
"""

from engine.errors import InvalidFunctionError, WorkbenchError

__all__ = ["InvalidFunctionError", "WorkbenchError"]
