"""Zero-shot accuracy through lm-eval-harness (the optional extra `eval`: pip install 'dsa-workbench[eval]').

A task is a name from lm-eval's registry (arc_easy, hellaswag, ...: it needs its dataset, from the hub or the
local Hugging Face cache) or a local JSON-lines file of multiple-choice questions, one object a line:

    {"question": "The sun rises in the", "choices": ["east", "west"], "answer": 0}

A local file becomes an lm-eval task named after the file (its stem), scored like the registry's
multiple-choice tasks: the log-likelihood of each choice after the question, `acc` the share of questions
whose answer scores highest, `acc_norm` the same with log-likelihoods divided by the choices' byte lengths.
`tasks/general_facts.jsonl` ships with the package (`--tasks general_facts` finds it), so zero-shot accuracy
works offline. Each task runs on its own: one that fails (no dataset, no network, a bad file) is reported in
one line and the others, and every perplexity, stand.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import WorkbenchError
from engine.files import jsonl_rows
from engine.progress import Progress, no_progress
from engine.search.control import SearchStopped

SHIPPED_TASKS = Path(__file__).resolve().parent / "tasks"
log = logging.getLogger(__name__)  # at INFO (the CLI's --verbose) lm-eval's own logs and bars show
CHUNK = 32  # log-likelihood requests between two progress reports (and cancellation checks)


@dataclass(frozen=True)
class TaskScore:
    """One task's accuracy (`acc`, and `acc_norm` where the task defines it), or why it failed."""

    task: str
    accuracy: float | None = None
    normalized: float | None = None
    samples: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def parse_tasks(text: str | None) -> tuple[str, ...]:
    """'arc_easy, general_facts,./mine.jsonl' -> the task specs, in order, without repeats."""
    tasks = tuple(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip()))
    if text and text.strip() and not tasks:
        raise WorkbenchError("--tasks names no task: give e.g. --tasks general_facts or arc_easy,hellaswag")
    return tasks


def task_name(spec: str) -> str:
    """The column a task's results go under: a registry name as it is, a local file by its stem."""
    return Path(spec).stem if spec.endswith(".jsonl") else spec


def zero_shot(model, tokenizer, tasks: tuple[str, ...], *, limit: int | None = None, batch_size: int = 4,
              progress: Progress = no_progress) -> dict[str, TaskScore]:
    """Zero-shot accuracy of an in-memory causal LM on each task, by task name. `progress` is called every
    CHUNK requests and may raise to stop (that is not a task failure: it propagates)."""
    if limit is not None and limit < 1:
        raise WorkbenchError(f"--limit must be at least 1 (got {limit})")
    lm = _language_model(model, tokenizer, batch_size, progress)
    scores = {}
    for spec in tasks:
        name = task_name(spec)
        started = time.perf_counter()
        lm.stage = f"zero-shot {name}"
        try:
            scores[name] = _run_task(lm, spec, name, limit, started)
        except (KeyboardInterrupt, MemoryError, SearchStopped):
            raise
        except Exception as exc:  # noqa: BLE001 - any task failure is that task's one-line result
            scores[name] = TaskScore(name, seconds=time.perf_counter() - started, error=_one_line(exc))
    return scores


def _run_task(lm, spec: str, name: str, limit: int | None, started: float) -> TaskScore:
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="dsa-workbench-task-") as folder:
        local = _local_task_file(spec)
        if local is not None:
            _write_task_config(local, name, Path(folder))
            manager = TaskManager(include_path=folder, include_defaults=False)
        else:
            manager = TaskManager()
        with _quiet():
            out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, limit=limit, num_fewshot=0,
                                          bootstrap_iters=0, log_samples=False)
    metrics = out["results"][name]
    return TaskScore(name, metrics.get("acc,none"), metrics.get("acc_norm,none"),
                     int(out.get("n-samples", {}).get(name, {}).get("effective", 0)), time.perf_counter() - started)


def _local_task_file(spec: str) -> Path | None:
    """The JSON-lines file `spec` names (a path, or a task shipped with the package), checked; None for a
    registry name."""
    if spec.endswith(".jsonl"):
        path = Path(spec).expanduser()
    elif (SHIPPED_TASKS / f"{spec}.jsonl").is_file():
        path = SHIPPED_TASKS / f"{spec}.jsonl"
    else:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"no such task file: {spec}")
    for _ in jsonl_rows(path, _valid_question, '{"question": str, "choices": [str, str, ...], "answer": index of '
                                                'the right choice}'):
        pass
    return path.resolve()


def _valid_question(row) -> bool:
    choices = row.get("choices") if isinstance(row, dict) else None
    return (isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(choices, list)
            and len(choices) >= 2 and all(isinstance(c, str) for c in choices)
            and isinstance(row.get("answer"), int) and 0 <= row["answer"] < len(choices))


def _write_task_config(path: Path, name: str, folder: Path) -> None:
    """An lm-eval task definition reading `path` with the `json` dataset builder (no network)."""
    config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
              "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}",
              "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "target_delimiter": " ",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                              {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    (folder / f"{name}.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML


def _language_model(model, tokenizer, batch_size: int, progress: Progress):
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise WorkbenchError("zero-shot accuracy needs lm-eval: pip install 'dsa-workbench[eval]'") from None

    class ReportingLM(HFLM):
        """lm-eval's Hugging Face wrapper around the in-memory model, reporting every CHUNK requests."""

        stage = "zero-shot"

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            out = []
            for start in range(0, len(requests), CHUNK):
                out.extend(super().loglikelihood(requests[start:start + CHUNK], disable_tqdm=True))
                progress(self.stage, len(out), len(requests))
            return out

    with _quiet():
        return ReportingLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                           device=str(next(model.parameters()).device))


class _quiet:
    """lm-eval, datasets and the hub client log every step and retry, and lm-eval draws a bar per task: only
    errors while a task runs, unless this module's logger is at INFO (the CLI's --verbose)."""

    NAMES = ("lm_eval", "lm-eval", "datasets", "huggingface_hub", "evaluate")

    def __enter__(self):
        import datasets
        import lm_eval.api.task

        self.active = not log.isEnabledFor(logging.INFO)
        if not self.active:
            return
        self.bars = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()
        self.levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.ERROR)
        self.tqdm = lm_eval.api.task.tqdm  # its "building contexts" bar has no switch of its own
        lm_eval.api.task.tqdm = functools.partial(self.tqdm, disable=True)

    def __exit__(self, *exc):
        import datasets
        import lm_eval.api.task

        if not self.active:
            return
        lm_eval.api.task.tqdm = self.tqdm
        for n, level in self.levels.items():
            logging.getLogger(n).setLevel(level)
        if self.bars:
            datasets.utils.logging.enable_progress_bar()


def _one_line(exc: Exception) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
