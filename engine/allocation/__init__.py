"""Layer-wise sparsity allocations: the classic baselines and DSA allocation functions."""

from engine.allocation.function import PUBLISHED_DSA, AllocationFunction
from engine.allocation.methods import (Allocation, AllocationInputs, canonical_method,
                                       compute_allocation, with_nan_policy)

__all__ = ["PUBLISHED_DSA", "AllocationFunction", "Allocation", "AllocationInputs",
           "canonical_method", "compute_allocation", "with_nan_policy"]
