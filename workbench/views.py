"""Engine results as the panes draw them (no torch: the App imports it)."""

from __future__ import annotations

from workbench.contract import AllocationView


def allocation_view(method: str, target: float, ratios, layout, values=None) -> AllocationView:
    """Ratios per block, or per unit where finer (attention and MLP groups, or linears: engine.allocation.units,
    model order), as the panes draw them: per block (weighted means) and, where finer, attention and MLP apart."""
    blocks = len({b for b, _, _ in layout})
    if not layout or len(ratios) == blocks:
        return AllocationView(method, target, tuple(ratios), values)
    if len(ratios) == len(layout):
        units = [((b, g), size, r) for (b, g, size), r in zip(layout, ratios)]
    else:  # one ratio per group
        sizes: dict[tuple[int, int], int] = {}
        for b, g, size in layout:
            sizes[(b, g)] = sizes.get((b, g), 0) + size
        units = [(key, size, r) for (key, size), r in zip(sizes.items(), ratios)]
    sums: dict[tuple[int, int], list[float]] = {}
    for key, size, r in units:
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += r * size
        acc[1] += size
    groups = tuple(tuple(sums[(b, g)][0] / sums[(b, g)][1] for b in range(blocks)) for g in (0, 1))
    block = tuple((sums[(b, 0)][0] + sums[(b, 1)][0]) / (sums[(b, 0)][1] + sums[(b, 1)][1]) for b in range(blocks))
    return AllocationView(method, target, block, values, groups)
