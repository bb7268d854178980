"""The memory plan, from configs alone (the shipped Llama-3.1-8B and 70B configs: no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data_config import DataConfig
from engine.errors import WorkbenchError
from engine.loading import model_config
from engine.plan import GiB, Machine, ModelShape, make_plan, parse_size
from workbench.cli import main

DATA = Path(__file__).parent / "data"
PAPER = DataConfig(seqlen=2048, calib_tokens=128 * 2048, batch_size=4)


def shape(name: str) -> ModelShape:
    return ModelShape.of(model_config(str(DATA / name)), name)


def gpus(n: int, gib: int) -> Machine:
    return Machine(n, gib * GiB, 1024 * GiB, 1 * GiB)


def test_shapes_from_the_configs_alone():
    eight, seventy = shape("llama-3.1-8b"), shape("llama-3.1-70b")
    assert eight.params == 8_030_261_248 and seventy.params == 70_553_706_496
    assert eight.layers == 32 and eight.block_linears[6] == (4096, 14336)


def test_sparsegpt_on_8b_needs_sequential_calibration_to_fit_40_gb():
    eight = shape("llama-3.1-8b")
    dense = make_plan(eight, "prune", metric="sparsegpt", dtype_bytes=2, data=PAPER, machine=gpus(1, 40))
    assert dense.peak("device").name in ("calibration", "pruning")
    assert dense.peak("device").device > 40 * GiB  # every Hessian: about 33 GiB besides 15 GiB of weights
    assert "--calibration sequential" in dense.problems()[0]
    sequential = make_plan(eight, "prune", metric="sparsegpt", calibration="sequential", dtype_bytes=2, data=PAPER,
                           machine=gpus(1, 40))
    assert not sequential.problems() and sequential.peak("device").device < 25 * GiB


def test_70b_needs_several_gpus_and_a_search_fits_on_eight():
    seventy = shape("llama-3.1-70b")
    one = make_plan(seventy, "search", dtype_bytes=2, data=PAPER, machine=gpus(1, 80))
    assert "--device-map auto" in one.problems()[0]
    eight = make_plan(seventy, "search", dtype_bytes=2, data=PAPER, machine=gpus(8, 80))
    assert not eight.problems()
    # a search holds the weights and their int16 ranks: at most twice the weight bytes per GPU
    assert eight.peak("device").device < 2 * seventy.params * 2 / 8 * 1.15


def test_search_device_memory_stays_within_twice_the_weights():
    eight = shape("llama-3.1-8b")
    plan = make_plan(eight, "search", dtype_bytes=2, data=DataConfig(seqlen=2048, fitness_tokens=8192),
                     machine=gpus(1, 141))
    assert plan.peak("device").device < 2 * plan.weight_bytes


def test_sizes_parse():
    assert parse_size("80GB") == 80 * GiB and parse_size("141 GiB") == 141 * GiB and parse_size("512m") == 512 << 20
    with pytest.raises(WorkbenchError):
        parse_size("lots")


def test_plan_command_and_a_command_that_cannot_fit_stops_before_loading(capsys):
    assert main(["plan", "--model", str(DATA / "llama-3.1-70b"), "--command", "prune", "--metric", "sparsegpt",
                 "--gpus", "8", "--gpu-memory", "80GB", "--host-memory", "1TB", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fits"] and result["params"] == 70_553_706_496
    assert [p["name"] for p in result["phases"]] == ["load", "calibration", "pruning", "evaluation", "export"]
    # this machine: 70B in float32 on the CPU cannot fit; the folder holds no weights, and is never read
    code = main(["prune", "--model", str(DATA / "llama-3.1-70b"), "--sparsity", "0.5", "--out", "never",
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "will not fit" in err[0] and "host memory" in err[0]


@pytest.mark.parametrize("options, detail", [([], "every Hessian at once"),
                                              (["--protocol", "paper"], "weights and one batch's activations"),
                                              (["--protocol", "paper", "--calibration", "dense"], "every Hessian")])
def test_plan_calibrates_as_prune_would_under_the_protocol(capsys, options, detail):
    # --protocol paper prunes block by block (sequential), so its plan holds one block's Hessians, not all of them
    assert main(["plan", "--model", str(DATA / "llama-3.1-70b"), "--command", "prune", "--metric", "sparsegpt",
                 "--gpus", "8", "--gpu-memory", "80GB", "--host-memory", "1TB", "--json", *options]) == 0
    phases = {p["name"]: p for p in json.loads(capsys.readouterr().out)["phases"]}
    assert phases["calibration"]["detail"].startswith(detail)
