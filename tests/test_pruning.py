"""Masks and pruners on a tiny random Llama: exact per-row counts, valid N:M, SparseGPT updates."""

from __future__ import annotations

import pytest
import torch

from engine.metrics import NMPattern, nm_prune_mask, parse_pattern, prune_count
from engine.sparsegpt import sparsegpt_prune_
from engine.errors import WorkbenchError


@pytest.mark.parametrize("metric", ["wanda", "magnitude"])
def test_unstructured_masks_prune_exactly_the_fraction_of_every_row(tiny_session, metric):
    ratios = {}
    for block in tiny_session.blocks:
        for j, name in enumerate(block.linears):
            ratios[name] = [0.1, 0.33, 0.5, 0.61, 0.7, 0.8, 0.9][j]
    tiny_session.pruner(metric).apply(ratios)
    for block in tiny_session.blocks:
        for name, lin in block.linears.items():
            zeros = (lin.weight == 0).sum(dim=1)
            assert torch.all(zeros == prune_count(lin.in_features, ratios[name])), name


def test_wanda_prunes_the_lowest_scores_of_each_row(tiny_session):
    name, lin = next(iter(tiny_session.blocks[1].linears.items()))
    pruner = tiny_session.pruner("wanda")
    scores = pruner.scores(name)
    pruner.apply({n: 0.5 for n in pruner.linears})
    pruned = lin.weight == 0
    for row in range(lin.out_features):
        assert scores[row][pruned[row]].max() <= scores[row][~pruned[row]].min()


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_nm_masks_are_valid(tiny_session, pattern):
    nm = parse_pattern(pattern)
    allocation = tiny_session.allocate("uniform", nm.ratio)
    tiny_session.prune(allocation, "wanda", nm)
    for block in tiny_session.blocks:
        for lin in block.linears.values():
            groups = (lin.weight == 0).reshape(lin.out_features, -1, nm.m).sum(dim=2)
            assert torch.all(groups == nm.n)


def test_nm_mask_picks_lowest_in_each_group():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 9.0, 8.0, 0.1]])
    mask = nm_prune_mask(scores, NMPattern(2, 4))
    assert mask.tolist() == [[False, True, False, True, True, False, False, True]]


@pytest.mark.parametrize("text", ["3:2", "2:2", "0:4", "x", "2-4"])
def test_bad_patterns(text):
    with pytest.raises(WorkbenchError):
        parse_pattern(text)


def test_nm_pattern_needs_uniform_allocation(tiny_session):
    owl = tiny_session.allocate("owl", 0.5)
    with pytest.raises(WorkbenchError, match="uniform"):
        tiny_session.prune(owl, "wanda", NMPattern(2, 4))


def test_restore_brings_back_the_dense_weights(tiny_session):
    before = {n: lin.weight.clone() for b in tiny_session.blocks for n, lin in b.linears.items()}
    tiny_session.prune(tiny_session.allocate("owl", 0.6), "wanda")
    tiny_session.restore()
    for b in tiny_session.blocks:
        for n, lin in b.linears.items():
            assert torch.equal(lin.weight, before[n])


def test_sparsegpt_reaches_the_ratio_and_beats_magnitude_on_reconstruction():
    torch.manual_seed(0)
    mix = torch.randn(64, 64)
    X = torch.randn(2048, 64) @ mix  # correlated inputs, where the weight update matters
    W = torch.randn(32, 64)
    H = 2 * X.T @ X / X.shape[0]
    pruned = W.clone()
    sparsegpt_prune_(pruned, H, 0.5)
    assert (pruned == 0).float().mean().item() == pytest.approx(0.5, abs=1 / 64)
    magnitude = W.clone()
    k = prune_count(64, 0.5)
    magnitude.scatter_(1, (magnitude.abs() * X.norm(dim=0)).argsort(dim=1)[:, :k], 0)
    err = lambda w: ((X @ (W - w).T) ** 2).sum().item()  # noqa: E731
    assert err(pruned) < err(magnitude)


def test_sparsegpt_nm(tiny_session):
    tiny_session.prune(tiny_session.allocate("uniform", 0.5), "sparsegpt", NMPattern(2, 4))
    for block in tiny_session.blocks:
        for lin in block.linears.values():
            groups = (lin.weight == 0).reshape(lin.out_features, -1, 4).sum(dim=2)
            assert torch.all(groups >= 2)


def test_pruning_raises_perplexity_and_kl(tiny_session):
    dense_ppl = tiny_session.perplexity()
    assert tiny_session.kl() == pytest.approx(0.0, abs=1e-3)
    tiny_session.prune(tiny_session.allocate("uniform", 0.8), "magnitude")
    assert tiny_session.kl() > 1e-3
    assert tiny_session.perplexity() != dense_ppl
