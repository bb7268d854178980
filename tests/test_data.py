"""Corpora and splits: disjoint, deterministic by seed, from every supported source."""

from __future__ import annotations

import json

import pytest

from engine.corpus import load_texts, split_corpus, token_windows
from engine.errors import WorkbenchError


def test_default_splits_are_disjoint_and_cover_the_corpus():
    splits = split_corpus(None, seed=0)
    parts = [set(splits.calibration), set(splits.fitness), set(splits.evaluation)]
    assert all(parts) and not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(map(len, parts)) == len(load_texts(None)[0])


def test_splits_are_deterministic_by_seed():
    assert split_corpus(None, 3) == split_corpus(None, 3)
    assert split_corpus(None, 3).evaluation != split_corpus(None, 4).evaluation


def write_sources(tmp_path):
    docs = [f"document number {i} " * 50 for i in range(12)]
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i}.txt").write_text(d)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": docs}), parquet)
    from datasets import Dataset

    saved = tmp_path / "saved"
    Dataset.from_dict({"text": docs}).save_to_disk(str(saved))
    return docs, [folder, jsonl, parquet, saved]


def test_every_source_kind_gives_the_same_documents(tmp_path):
    docs, sources = write_sources(tmp_path)
    for source in sources:
        texts, _ = load_texts(str(source))
        assert sorted(texts) == sorted(docs), source


def test_bad_jsonl_line_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(WorkbenchError, match="bad.jsonl:2"):
        load_texts(str(bad))


def test_missing_corpus(tmp_path):
    with pytest.raises(WorkbenchError, match="no such corpus"):
        load_texts(str(tmp_path / "nope.txt"))


def test_windows_shape_and_too_small_corpus(tmp_path, tiny_session):
    tok = tiny_session.loaded.tokenizer
    windows = token_windows(tok, split_corpus(None, 0), "evaluation", 1000, 100)
    assert tuple(windows.shape) == (10, 100)
    small = tmp_path / "small.txt"
    small.write_text("just a few words here. " * 5)
    with pytest.raises(WorkbenchError, match="--eval-tokens"):
        token_windows(tok, split_corpus(str(small), 0), "evaluation", 100000, 100)
