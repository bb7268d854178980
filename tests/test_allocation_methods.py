"""Baseline allocations and the method dispatcher, on hand-made scores and on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.allocation import AllocationInputs, compute_allocation
from engine.choices import METHODS
from engine.errors import WorkbenchError
from engine.allocation.mapping import scaled_ratios
from engine.allocation.methods import esd_alpha
from engine.architecture import Block

VALID_FUNCTIONS = ["abs | mean | no_op", "abslog | std | tanh | dir=-", "pow2 | l2 | log | lam=0.2",
                   "normalize | entropy | sigmoid", "abs | erank | no_op", "abs | gram | sqrt"]


def hand_made_blocks(outlier_counts: list[int]):
    """Blocks of one 20x50 linear whose scores are 1 except `count` entries of 100."""
    blocks, dense, scores = [], {}, {}
    for i, count in enumerate(outlier_counts):
        name = f"model.layers.{i}.mlp.down_proj"
        lin = nn.Linear(50, 20, bias=False)
        s = torch.ones(20, 50)
        s.view(-1)[:count] = 100.0
        blocks.append(Block(i, {name: lin}, lin))
        dense[name] = lin.weight.detach().clone()
        scores[name] = s
    return AllocationInputs(blocks, dense.__getitem__, scores.__getitem__, sample_size=1000)


def test_owl_gives_lower_sparsity_to_blocks_with_more_outliers():
    inputs = hand_made_blocks([40, 10, 0, 25])
    assert inputs.outlier_fractions == pytest.approx([0.04, 0.01, 0.0, 0.025])
    ratios = compute_allocation("owl", 0.7, inputs).block_ratios
    order = sorted(range(4), key=lambda i: ratios[i])
    assert order == [0, 3, 1, 2]
    assert max(ratios) - min(ratios) == pytest.approx(0.16)
    assert sum(ratios) / 4 == pytest.approx(0.7, abs=1e-12)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "dsa"] + VALID_FUNCTIONS)
def test_weighted_mean_equals_target(tiny_session, method, target):
    if method == "ends" and target == 0.9:  # of 3 blocks, 2 below 0.9 leave the third above 0.99
        with pytest.raises(WorkbenchError, match="no value of its grid keeps the mean at the target 0.9"):
            tiny_session.allocate(method, target, "wanda")
        return
    allocation = tiny_session.allocate(method, target, "wanda")
    params = {n: tiny_session.dense_weight(n).numel() for n in allocation.linear_ratios}
    mean = sum(allocation.linear_ratios[n] * params[n] for n in params) / sum(params.values())
    assert mean == pytest.approx(target, abs=1e-9)
    assert all(0.01 - 1e-9 <= r <= 0.99 + 1e-9 for r in allocation.linear_ratios.values())
    assert len(allocation.block_ratios) == len(tiny_session.blocks)


def test_published_function_is_accepted_or_rejected_by_name(tiny_session):
    from engine.errors import InvalidFunctionError

    try:
        allocation = tiny_session.allocate("dsa", 0.6)
    except InvalidFunctionError as exc:
        assert exc.op in ("asin", "atan", "abslog", "var", "mapping")
    else:
        assert allocation.method == "abslog | var | atan, asin"


def test_global_collapses_towards_layers_with_low_scores(tiny_session):
    allocation = tiny_session.allocate("global", 0.5)
    assert len(set(round(r, 6) for r in allocation.linear_ratios.values())) > 1


def test_er_plus_is_er_with_the_unpruned_head_and_er_ends_keeps_the_ends_denser(tiny_session):
    inputs = tiny_session.allocation_inputs("wanda")
    er = compute_allocation("er", 0.6, inputs).linear_ratios
    assert compute_allocation("er-plus", 0.6, inputs).linear_ratios == er
    ends = compute_allocation("er-ends", 0.6, inputs).block_ratios
    assert ends[0] < ends[1] and ends[-1] < ends[1]


def test_owl_reads_wanda_outliers_whatever_the_metric(tiny_session):
    assert tiny_session.allocate("owl", 0.6, "magnitude").block_ratios == \
        tiny_session.allocate("owl", 0.6, "wanda").block_ratios
    assert tiny_session.allocate("global", 0.6, "magnitude").block_ratios != \
        tiny_session.allocate("global", 0.6, "wanda").block_ratios


def _matrix_with_eigenvalues(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    n = eigenvalues.numel()
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (u @ torch.diag(eigenvalues.sqrt()) @ v.T).float()


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_esd_alpha_recovers_the_exponent_of_a_power_law_spectrum(alpha):
    """Eigenvalues drawn from p(x) ~ x^-alpha above 0.01: the KS-chosen fit finds alpha within 15%."""
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(400, generator=gen, dtype=torch.float64)
    eigenvalues = 0.01 * u.pow(-1 / (alpha - 1))
    assert esd_alpha(_matrix_with_eigenvalues(eigenvalues)) == pytest.approx(alpha, rel=0.15)


def test_esd_alpha_is_lower_for_heavier_tails():
    gen = torch.Generator().manual_seed(2)
    u = torch.rand(300, generator=gen, dtype=torch.float64)
    heavy, light = (_matrix_with_eigenvalues(0.01 * u.pow(-1 / (a - 1))) for a in (2.0, 5.0))
    assert esd_alpha(heavy) < esd_alpha(light)


def test_alpha_mapping_is_multiplicative_around_the_target():
    """AlphaPruning: r in [1 - eps, 1 + eps] by min-max of alpha, times target, scaled to the mean: at 0.7 and
    eps 0.2 the spread is 2 * 0.2 * 0.7 = 0.28, not 2 * eps."""
    ratios = scaled_ratios([3.0, 5.0, 4.0], [1, 1, 1], 0.7, 0.2)
    assert ratios == pytest.approx([0.56, 0.84, 0.70])
    weighted = scaled_ratios([3.0, 5.0], [3, 1], 0.5, 0.2)  # r = 0.8, 1.2: mean 0.9 -> c = 1/0.9
    assert weighted == pytest.approx([0.5 * 0.8 / 0.9, 0.5 * 1.2 / 0.9])


def test_alpha_allocation_records_its_eps_and_gives_lower_sparsity_to_lower_alpha(tiny_session):
    allocation = tiny_session.allocate("alpha", 0.7)
    assert allocation.parameters["eps"] == 0.2
    values, ratios = allocation.block_values, allocation.block_ratios
    assert sorted(range(len(values)), key=values.__getitem__) == sorted(range(len(ratios)), key=ratios.__getitem__)
    assert max(ratios) - min(ratios) <= 2 * 0.2 * 0.7 / 0.8 + 1e-9


def test_atp_is_an_arithmetic_progression_about_the_target_and_refuses_an_illegal_beta():
    """ATP's reference (main.py): s_i = S - beta (L - 1) / 2 + i beta; beta above min(2S, 2(1 - S)) / (L - 1)
    is illegal; search.sh tries 0.002, 0.004, ... up to that bound."""
    from engine.allocation.profiles import block_form_ratios, tuning_grid

    assert block_form_ratios("atp:0.05", [1] * 5, 0.6) == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7])
    assert block_form_ratios("atp:0", [1] * 5, 0.6) == pytest.approx([0.6] * 5)
    with pytest.raises(WorkbenchError, match=r"beta above 0.1500 .*S 0.7, L 5 blocks"):
        block_form_ratios("atp:0.16", [1] * 5, 0.7)
    grid = tuning_grid("atp", 0.7, 32)  # LLaMA-2-7B at 70%: 0.6 / 31 = 0.01935 -> 9 betas
    assert grid == [f"atp:{0.002 * k:g}" for k in range(1, 10)]
    assert tuning_grid("atp", 0.5, 5) == [f"atp:{0.002 * k:g}" for k in range(7, 126, 7)]  # 125 betas: every 7th


def test_atp_picks_beta_on_the_fitness_split_and_records_the_betas_tried(tiny_session):
    from engine.allocation.profiles import tuning_grid

    allocation = tiny_session.allocate("atp", 0.9)
    tried = allocation.parameters["tried"]
    assert len(tried) == len(tuning_grid("atp", 0.9, 3)) == 16  # every 3rd of 50, up to min(1.8, 0.2) / 2 = 0.1
    assert allocation.method == f"atp:{min(tried, key=tried.get)}"
    assert allocation.parameters["beta"] == float(min(tried, key=tried.get))
    ratios = allocation.block_ratios
    assert ratios[1] - ratios[0] == pytest.approx(ratios[2] - ratios[1]) and ratios[0] <= ratios[2]


def test_dlp_follows_its_reference_formula_on_block_mean_scores():
    """DLP's reference (lib/prune.py get_dlp_ratios): the layer score is the mean Wanda score of all its
    linears; density = (1 - S) + d - mean(d), d = minmax(1 - score / sum(score)) * 2 alpha."""
    inputs = hand_made_blocks([40, 10, 0, 25])
    scores = [(1000 - c + 100 * c) / 1000 for c in (40, 10, 0, 25)]  # mean score of each block
    assert inputs.mean_scores == pytest.approx(scores)
    r = [1 - s / sum(scores) for s in scores]
    d = [(x - min(r)) / (max(r) - min(r)) * 2 * 0.15 for x in r]
    reference = [1 - ((1 - 0.7) + x - sum(d) / len(d)) for x in d]
    allocation = compute_allocation("dlp", 0.7, inputs)
    assert allocation.block_ratios == pytest.approx(reference, abs=1e-12)
    assert allocation.parameters["alpha"] == 0.15 and allocation.block_values == pytest.approx(scores)


def test_dlp_reads_wanda_scores_whatever_the_metric(tiny_session):
    assert tiny_session.allocate("dlp", 0.7, "magnitude").block_ratios == \
        tiny_session.allocate("dlp", 0.7, "wanda").block_ratios


def test_method_names_aliases_and_function_texts_are_canonicalised(tiny_session):
    from engine.allocation import canonical_method
    from engine.errors import InvalidFunctionError

    assert canonical_method("alphapruning") == "alpha" and canonical_method("owl") == "owl"
    assert canonical_method(" abs|mean |no_op ") == "abs | mean | no_op"
    with pytest.raises(InvalidFunctionError):
        canonical_method("abs | means | no_op")
    assert tiny_session.allocate("alphapruning", 0.6).block_ratios == tiny_session.allocate("alpha", 0.6).block_ratios


def test_reference_nan_policy_reads_whole_blocks_as_the_reference_code(tiny_session):
    """Under nan=reference a function reduces every score of a block (its linears flattened), not the sample."""
    import math

    from engine.allocation import with_nan_policy

    method = with_nan_policy("no_op | var | no_op", "reference")
    assert method == "no_op | var | no_op | nan=reference"
    allocation = tiny_session.allocate(method, 0.6)
    scorer = tiny_session.pruner("wanda")
    for block, value in zip(tiny_session.blocks, allocation.block_values):
        whole = torch.cat([scorer.scores(n).double().flatten() for n in block.linears])
        assert value == pytest.approx(whole.var(correction=0).item(), rel=1e-9)
    assert allocation.parameters == {"replaced_blocks": []}
    assert not math.isnan(sum(tiny_session.allocate(with_nan_policy("dsa", "reference"), 0.6).block_ratios))


@pytest.mark.parametrize("granularity", ["group", "linear"])
def test_a_profile_finer_than_blocks_prunes_each_unit_at_its_own_sparsity(tiny_session, granularity):
    from engine.allocation.profiles import profile_text
    from engine.allocation.units import unit_linears, unit_params

    units = unit_linears(tiny_session.blocks, granularity)
    values = [0.5 + 0.4 * i / (len(units) - 1) for i in range(len(units))]
    allocation = tiny_session.allocate(profile_text(values), 0.7)
    weights = unit_params(tiny_session.blocks, granularity)
    assert sum(r * w for r, w in zip(allocation.unit_ratios, weights)) / sum(weights) == pytest.approx(0.7, abs=1e-9)
    shift = allocation.unit_ratios[0] - values[0]  # one shift moves the profile to the target
    assert allocation.unit_ratios == pytest.approx([v + shift for v in values])
    for unit, ratio in zip(units, allocation.unit_ratios):
        assert all(allocation.linear_ratios[n] == ratio for n in unit)
    assert allocation.candidate_ratios == allocation.unit_ratios and len(allocation.block_ratios) == 3
    if granularity == "group":
        assert [n.rsplit(".", 2)[-2] for n in units[0]] == ["self_attn"] * 4
        assert [n.rsplit(".", 2)[-2] for n in units[1]] == ["mlp"] * 3


def test_a_profile_of_a_length_no_granularity_has_is_refused_in_one_line(tiny_session):
    with pytest.raises(WorkbenchError, match=r"4 sparsities but the model has 3 blocks \(.* 6 for attention and MLP "
                                             r"apart, or 21 for every linear\)"):
        tiny_session.allocate("profile:0.7,0.7,0.7,0.7", 0.7)
    assert tiny_session.cache_bytes()["calibration"] == 0  # refused before any calibration
