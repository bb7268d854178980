"""Allocation functions: the op palette is total, the text form round-trips, the mapping is exact."""

from __future__ import annotations

import math

import pytest
import torch

from engine.allocation import PUBLISHED_DSA, AllocationFunction
from engine.allocation.mapping import spread_ratios
from engine.allocation.ops import PRE_OPS, REDUCTIONS, TRANSFORMS
from engine.allocation.samples import BlockSample
from engine.errors import InvalidFunctionError, WorkbenchError


def samples(kind: str, n_blocks: int = 6) -> list[BlockSample]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for b in range(n_blocks):
        base = torch.randn(24, 16, generator=gen, dtype=torch.float64)
        matrix = {
            "random": base * (1 + b),
            "positive": base.abs() + 0.1 * b,
            "zero": torch.zeros(24, 16, dtype=torch.float64),
            "negative": -(base.abs() + 1 + b),
            "huge": base * 1e300,
            "tiny": base * 1e-300,
        }[kind]
        out.append(BlockSample(matrix, 1000))
    return out


KINDS = ["random", "positive", "zero", "negative", "huge", "tiny"]


def assert_total(function: AllocationFunction, kind: str, ops_used: set[str]) -> None:
    """Either finite ratios in range with the exact mean, or an error that names an op of the function."""
    try:
        ratios, values = function.block_ratios(samples(kind), [1] * 6, 0.6)
    except InvalidFunctionError as exc:
        assert exc.op in ops_used | {"mapping"}, f"{function} on {kind}: error names {exc.op!r}: {exc}"
        return
    assert all(math.isfinite(v) for v in values), f"{function} on {kind} gave {values}"
    assert all(0.01 - 1e-12 <= r <= 0.99 + 1e-12 for r in ratios)
    assert abs(sum(ratios) / len(ratios) - 0.6) < 1e-9


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", list(PRE_OPS))
def test_every_pre_op_is_total(op, kind):
    assert_total(AllocationFunction((op,), "mean", ()), kind, {op, "mean"})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", list(REDUCTIONS))
def test_every_reduction_is_total(op, kind):
    assert_total(AllocationFunction((), op, ()), kind, {op})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", list(TRANSFORMS))
def test_every_transform_is_total(op, kind):
    assert_total(AllocationFunction((), "mean", (op,)), kind, {op, "mean"})


def test_asin_outside_its_domain_is_rejected_naming_the_op():
    # mean of values ~ 5 -> asin(5) is NaN: rejected, never replaced.
    with pytest.raises(InvalidFunctionError) as err:
        AllocationFunction((), "mean", ("asin",)).block_values(samples("negative"))
    assert err.value.op == "asin" and "NaN" in str(err.value)


@pytest.mark.parametrize("stage,table", [("pre", PRE_OPS), ("reduction", REDUCTIONS), ("transform", TRANSFORMS)])
def test_parse_print_round_trip_for_every_op(stage, table):
    for op in table:
        kwargs = {"pre": (), "reduction": "mean", "transform": ()}
        kwargs[stage] = op if stage == "reduction" else (op,)
        function = AllocationFunction(**kwargs)
        text = str(function)
        assert AllocationFunction.parse(text) == function
        assert str(AllocationFunction.parse(text)) == text


@pytest.mark.parametrize("text", [
    "abslog | var | atan, asin",
    "abs, normalize, tanh | entropy | sqrt, reciprocal | lam=0.12",
    "no_op | median | no_op | dir=-",
    "softmax | logdet | no_op | lam=0.05 | dir=-",
    "abslog | var | atan, asin | nan=reference",
    "abs | mean | no_op | dir=- | groups",
])
def test_canonical_texts_print_back_identically(text):
    assert str(AllocationFunction.parse(text)) == text


def test_published_function_and_reference_code_form():
    assert str(PUBLISHED_DSA) == "abslog | var | atan, asin"
    assert AllocationFunction.parse("W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)") == PUBLISHED_DSA  # LAMBDA group: unread
    assert AllocationFunction.parse("W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(9)").lam == 0.08
    with pytest.raises(InvalidFunctionError):
        AllocationFunction.parse("X:(ABSLOG)-(VAR)-(ATAN,ASIN)")
    from engine.allocation import with_nan_policy
    from engine.choices import REFERENCE_DSA_TEXT

    assert with_nan_policy("dsa", "reference") == REFERENCE_DSA_TEXT
    assert str(AllocationFunction.parse(REFERENCE_DSA_TEXT).with_nan_policy("reject")) == str(PUBLISHED_DSA)
    assert AllocationFunction.parse("  abslog|var|atan ,asin ") == PUBLISHED_DSA


@pytest.mark.parametrize("text,op", [
    ("abslog | variance | atan", "variance"),
    ("abslog | var, mean | atan", "var, mean"),
    ("abslog | var", None),
    ("", None),
    ("abslog | var | atan | lam=2", "lam"),
    ("abslog | var | atan | lam=x", "lam"),
    ("abslog | var | atan | dir=up", "dir"),
    ("abslog | var | atan | nan=zero", "nan"),
    ("W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(x)", None),
    ("abslog | var | frobnicate", "frobnicate"),
    ("abslog | var | atan | groups=1", "groups"),
    ("abslog | var | atan | groups | groups", "groups"),
    ("abslog | var | atan | nan=reference | groups", "groups"),
])
def test_invalid_expressions_raise_with_the_op(text, op):
    with pytest.raises(InvalidFunctionError) as err:
        AllocationFunction.parse(text)
    assert err.value.op == op
    assert "\n" not in str(err.value)


def mixed_samples() -> list[BlockSample]:
    """Six blocks whose mean is 0.5, 0.9, 3, 0.2, 5, 0.7: asin of a mean above 1 is NaN."""
    return [BlockSample(torch.full((4, 4), m, dtype=torch.float64), 1000) for m in (0.5, 0.9, 3.0, 0.2, 5.0, 0.7)]


def test_reference_nan_policy_replaces_nan_with_zero_and_names_the_blocks():
    rejecting = AllocationFunction((), "mean", ("asin",))
    with pytest.raises(InvalidFunctionError, match="op 'asin' produced NaN at block 2"):
        rejecting.block_values(mixed_samples())
    reference = AllocationFunction.parse("no_op | mean | asin | nan=reference")
    values = reference.block_values(mixed_samples()).tolist()
    assert values[2] == 0.0 and values[4] == 0.0 and values[0] == pytest.approx(math.asin(0.5))
    assert reference.replaced_blocks(mixed_samples()) == [2, 4] == rejecting.replaced_blocks(mixed_samples())
    inf = AllocationFunction.parse("no_op | mean | log | nan=reference")
    zero_block = [BlockSample(torch.zeros(4, 4, dtype=torch.float64), 1000)] + mixed_samples()[:2]
    assert inf.block_values(zero_block).tolist()[0] == -1.0


def test_reference_policy_sets_zeros_to_one_before_the_log_where_ours_floors_them():
    sample = [BlockSample(torch.tensor([[0.0, 0.5], [2.0, 4.0]], dtype=torch.float64), 4)]
    ours = AllocationFunction(("abslog",), "mean").block_values(sample).item()
    reference = AllocationFunction(("abslog",), "mean", nan="reference").block_values(sample).item()
    assert ours == pytest.approx((2 * math.log(0.5) + math.log(2) + math.log(4)) / 4)
    assert reference == pytest.approx((0 + math.log(0.5) + math.log(2) + math.log(4)) / 4)


def test_mapping_direction_spread_and_exact_mean():
    values = [1.0, 2.0, 3.0, 4.0]
    up = spread_ratios(values, [1, 1, 1, 1], 0.5, 0.08, 1)
    down = spread_ratios(values, [1, 1, 1, 1], 0.5, 0.08, -1)
    assert up == sorted(up) and down == sorted(down, reverse=True)
    assert up[-1] - up[0] == pytest.approx(0.16)
    weights = [1, 2, 3, 4]
    clipped = spread_ratios(values, weights, 0.95, 0.2, 1)
    assert max(clipped) <= 0.99 + 1e-12
    assert sum(w * r for w, r in zip(weights, clipped)) / sum(weights) == pytest.approx(0.95, abs=1e-12)


def test_equal_values_give_uniform_ratios():
    assert spread_ratios([3.0] * 5, [1] * 5, 0.7, 0.08, 1) == pytest.approx([0.7] * 5)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, float("nan"), 0.995])
def test_impossible_targets_are_errors(target):
    with pytest.raises(WorkbenchError):
        spread_ratios([1.0, 2.0], [1, 1], target, 0.08, 1)


def test_a_groups_function_gives_each_blocks_attention_and_mlp_their_own_sparsity(tiny_session):
    from engine.allocation.units import unit_params

    allocation = tiny_session.allocate("abs | mean | no_op | lam=0.2 | groups", 0.7)
    ratios = allocation.unit_ratios
    weights = unit_params(tiny_session.blocks, "group")
    assert len(ratios) == 6 and sum(r * w for r, w in zip(ratios, weights)) / sum(weights) == pytest.approx(0.7)
    assert max(ratios) - min(ratios) > 0.1 and ratios[0] != ratios[1]
    inputs = tiny_session.allocation_inputs("wanda")
    means = [float(s.matrix.abs().mean()) for s in inputs.group_samples]  # higher mean score -> sparser
    assert sorted(range(6), key=means.__getitem__) == sorted(range(6), key=ratios.__getitem__)
    assert allocation.linear_ratios["model.layers.0.self_attn.k_proj"] == ratios[0]
    assert allocation.linear_ratios["model.layers.0.mlp.up_proj"] == ratios[1]


def test_mutation_and_crossover_reach_and_keep_the_groups_flag():
    import random

    from engine.search.genome import crossover, mutate, random_function

    rng = random.Random(0)
    functions = [random_function(rng) for _ in range(40)]
    assert {f.groups for f in functions} == {True, False}
    f = AllocationFunction.parse("abs | mean | no_op")
    assert any(mutate(f, rng).groups for _ in range(60))
    g = AllocationFunction.parse("abs | mean | no_op | groups")
    assert {crossover(f, g, rng).groups for _ in range(40)} == {True, False}
