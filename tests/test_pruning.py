"""Masks and pruners on a tiny random Llama: exact per-row counts, valid N:M, SparseGPT updates."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.allocation import Allocation
from engine.blocks import BlockRunner
from engine.errors import WorkbenchError
from engine.metrics import NMPattern, nm_prune_mask, parse_pattern, prune_count
from engine.session import Session
from engine.sparsegpt import sparsegpt_prune_


def per_linear(session, ratios_by_position) -> Allocation:
    ratios = {name: ratios_by_position[j] for b in session.blocks for j, name in enumerate(b.linears)}
    return Allocation("custom", 0.5, ratios, ())


@pytest.mark.parametrize("metric", ["wanda", "magnitude-row"])
def test_unstructured_masks_prune_exactly_the_fraction_of_every_row(tiny_session, metric):
    allocation = per_linear(tiny_session, [0.1, 0.33, 0.5, 0.61, 0.7, 0.8, 0.9])
    tiny_session.prune(allocation, metric)
    tiny_session.write_pruned()
    for block in tiny_session.blocks:
        for name, lin in block.linears.items():
            zeros = (lin.weight == 0).sum(dim=1)
            assert torch.all(zeros == prune_count(lin.in_features, allocation.linear_ratios[name])), name
    assert tiny_session.achieved() == {n: (lin.weight == 0).sum().item() / lin.weight.numel()
                                       for b in tiny_session.blocks for n, lin in b.linears.items()}


def test_magnitude_prunes_the_smallest_weights_of_each_matrix_with_one_threshold(tiny_session):
    """As the OWL and AlphaPruning reference code prune by magnitude: rows lose different counts."""
    allocation = per_linear(tiny_session, [0.1, 0.33, 0.5, 0.61, 0.7, 0.8, 0.9])
    dense = {n: lin.weight.detach().clone() for b in tiny_session.blocks for n, lin in b.linears.items()}
    tiny_session.prune(allocation, "magnitude")
    tiny_session.write_pruned()
    uneven = 0
    for block in tiny_session.blocks:
        for name, lin in block.linears.items():
            pruned = lin.weight == 0
            assert pruned.sum() == prune_count(lin.weight.numel(), allocation.linear_ratios[name])
            assert dense[name].abs()[pruned].max() <= dense[name].abs()[~pruned].min()
            uneven += len(set(pruned.sum(dim=1).tolist())) > 1
    assert uneven > 0


def test_wanda_prunes_the_lowest_scores_of_each_row(tiny_session):
    name, lin = next(iter(tiny_session.blocks[1].linears.items()))
    scores = tiny_session.pruner("wanda").scores(name)
    tiny_session.prune(tiny_session.allocate("uniform", 0.5), "wanda")
    tiny_session.write_pruned()
    pruned = lin.weight == 0
    for row in range(lin.out_features):
        assert scores[row][pruned[row]].max() <= scores[row][~pruned[row]].min()


def test_masked_pruning_leaves_the_weights_dense_and_forwards_as_the_written_model(tiny_session):
    dense = {n: lin.weight.clone() for b in tiny_session.blocks for n, lin in b.linears.items()}
    x = tiny_session.windows("evaluation")[:2]
    dense_logits = tiny_session.model(x).logits
    tiny_session.prune(tiny_session.allocate("owl", 0.7), "wanda")
    masked = tiny_session.model(x).logits
    assert all(torch.equal(lin.weight, dense[n]) for b in tiny_session.blocks for n, lin in b.linears.items())
    assert not torch.equal(masked, dense_logits)
    tiny_session.write_pruned()
    assert torch.equal(tiny_session.model(x).logits, masked)
    assert tiny_session.cache_bytes()["host copy of the dense weights"] > 0
    tiny_session.restore()
    assert all(torch.equal(lin.weight, dense[n]) for b in tiny_session.blocks for n, lin in b.linears.items())
    assert torch.equal(tiny_session.model(x).logits, dense_logits)


def test_a_forward_that_fails_inside_a_block_leaves_no_pruned_weight_behind(tiny_session):
    dense = {n: lin.weight.clone() for b in tiny_session.blocks for n, lin in b.linears.items()}
    tiny_session.prune(tiny_session.allocate("uniform", 0.6), "wanda")
    broken = tiny_session.blocks[1].module.mlp.register_forward_pre_hook(lambda m, a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tiny_session.model(tiny_session.windows("evaluation")[:1])
    broken.remove()
    tiny_session.restore()
    assert all(torch.equal(lin.weight, dense[n]) for b in tiny_session.blocks for n, lin in b.linears.items())


def test_calibration_reports_after_every_block_and_a_raising_callback_ends_it_there(tiny_session):
    from engine.calibration import calibrate

    model, blocks, windows = tiny_session.model, tiny_session.blocks, tiny_session.windows("calibration")
    assert windows.shape == (8, 64) and len(blocks) == 3  # two batches of 4 windows, three blocks
    calls = []
    whole = calibrate(model, blocks, windows, progress=lambda *call: calls.append(call))
    assert calls == [("calibration", done, 512) for done in (85, 170, 256, 341, 426, 512)]

    class Stop(Exception):
        pass

    def stop_in_second_batch(stage, done, total):
        if done > 256:
            raise Stop

    with pytest.raises(Stop):
        calibrate(model, blocks, windows, progress=stop_in_second_batch)
    assert not any(b.module._forward_hooks or lin._forward_pre_hooks for b in blocks for lin in b.linears.values())
    again = calibrate(model, blocks, windows)  # nothing of the abandoned run is left in the model
    assert all(torch.equal(again.sq_sums[n], whole.sq_sums[n]) for n in whole.sq_sums)


def test_block_runner_gives_the_models_own_hidden_states(tiny_session):
    x = tiny_session.windows("calibration")[:5]
    runner = BlockRunner(tiny_session.model, tiny_session.blocks, x, batch_size=2)  # batches of 2, 2, 1
    runner.start()
    for i in range(len(tiny_session.blocks)):
        runner.run(i)
    with torch.no_grad():
        expected = tiny_session.model.model(input_ids=x).last_hidden_state
        got = tiny_session.model.model.norm(torch.cat(runner.hidden))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("metric", ["magnitude", "wanda", "sparsegpt"])
def test_sequential_pruning_matches_dense_where_it_must_and_holds_no_dense_statistics(tiny_session, metric):
    allocation = tiny_session.allocate("uniform", 0.5, "magnitude")
    tiny_session.prune(allocation, metric)
    tiny_session.write_pruned()
    dense_masks = {n: lin.weight == 0 for b in tiny_session.blocks for n, lin in b.linears.items()}
    tiny_session.restore()
    fresh = Session(tiny_session.loaded, tiny_session.data)
    fresh.prune(allocation, metric, calibration="sequential")
    assert fresh._calibration is None  # no model-wide statistics, let alone every Hessian at once
    masks = {n: lin.weight == 0 for b in fresh.blocks for n, lin in b.linears.items()}
    first = list(fresh.blocks[0].linears)
    later = [n for b in fresh.blocks[1:] for n in b.linears]
    # block 0 sees the same inputs either way; later blocks see the pruned prefix (not magnitude: no inputs)
    assert all(torch.equal(masks[n], dense_masks[n]) for n in first)
    same_later = all(torch.equal(masks[n], dense_masks[n]) for n in later)
    assert same_later == (metric == "magnitude")
    assert fresh.pruned.calibration == "sequential"
    fresh.restore()


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_nm_masks_are_valid(tiny_session, pattern):
    nm = parse_pattern(pattern)
    allocation = tiny_session.allocate("uniform", nm.ratio)
    tiny_session.prune(allocation, "wanda", nm)  # in place
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


def test_one_forward_gives_each_windows_kl_and_cross_entropy(tiny_session):
    """DenseReference.window_losses: summed over any first windows, the KL and the perplexity of those windows."""
    import math

    from engine.evaluation import DenseReference, perplexity

    windows = tiny_session.windows("evaluation")  # 4 windows of 64 tokens
    dense = DenseReference(tiny_session.model, windows, batch_size=3)  # batches across the windows' ends
    tiny_session.prune(tiny_session.allocate("uniform", 0.8), "magnitude")
    kl, nll = dense.window_losses(tiny_session.model)
    assert kl.shape == nll.shape == (4,) and bool((kl > 0).all())
    for n in (1, 2, 4):
        assert kl[:n].sum().item() / (n * 64) == pytest.approx(dense.kl(tiny_session.model, windows=n), rel=1e-6)
        assert math.exp(nll[:n].sum().item() / (n * 63)) == pytest.approx(
            perplexity(tiny_session.model, windows[:n]), rel=1e-5)


def test_kl_on_a_prefix_holds_only_that_prefix_of_dense_predictions(tiny_session):
    # a report's KL on the first 128 tokens of a long evaluation split must not store the whole split's
    from engine.evaluation import DenseReference, kl_between

    windows = tiny_session.windows("evaluation")  # 4 windows of 64 tokens
    dense, dense_model = DenseReference(tiny_session.model, windows), copy.deepcopy(tiny_session.model)
    tiny_session.prune(tiny_session.allocate("uniform", 0.8), "magnitude")
    assert len(tiny_session.dense_reference("evaluation", tokens=128).windows) == 2
    on_prefix = tiny_session.kl("evaluation", tokens=128)
    assert len(tiny_session.dense_reference("evaluation", tokens=128).windows) == 2
    assert on_prefix == pytest.approx(dense.kl(tiny_session.model, windows=2), rel=1e-5)
    whole = tiny_session.kl("evaluation")  # more asked: the reference grows to the whole split
    assert len(tiny_session.dense_reference("evaluation").windows) == 4
    assert whole == pytest.approx(dense.kl(tiny_session.model), rel=1e-5)
    # eval --kl: both models in memory, one batch of dense predictions at a time, the same figure
    assert kl_between(dense_model, tiny_session.model, windows, batch_size=1) == pytest.approx(whole, rel=1e-5)
