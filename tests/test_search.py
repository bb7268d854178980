"""The search engine: variation operators, durability (kill -9 and resume), control latency."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.allocation import AllocationFunction
from engine.errors import WorkbenchError
from engine.search import RunStore, Search, SearchController, SearchSettings
from engine.search import events as ev
from engine.search.genome import crossover, mutate, random_function

INVALID = "no_op | entropy | exp, exp, exp, exp, exp"  # exp^5 of a normalised entropy overflows


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mutation_and_crossover_always_give_parseable_functions(seed):
    rng = random.Random(seed)
    a, b = random_function(rng), random_function(rng)
    for f in (a, b, mutate(a, rng), mutate(mutate(b, rng), rng), crossover(a, b, rng),
              mutate(crossover(a, b, rng), rng)):
        text = str(f)
        assert AllocationFunction.parse(text) == f
        assert str(AllocationFunction.parse(text)) == text


def cli_search(run, tiny_model_dir, *extra):
    return [sys.executable, "-m", "workbench.cli", "search", "--model", str(tiny_model_dir), "--run", str(run),
            "--sparsity", "0.6", "--generations", "4", "--population", "5", "--seqlen", "64",
            "--calib-tokens", "512", "--fitness-tokens", "256", "--eval-tokens", "256", "--device", "cpu",
            "--seed-function", INVALID, "--quiet", *extra]


def population(run):
    state = json.loads((run / "state.json").read_text())
    return [(c["text"], c["fitness"]) for c in state["population"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir):
    run = tmp_path_factory.mktemp("runs") / "full"
    subprocess.run(cli_search(run, tiny_model_dir), check=True, capture_output=True, env=_env())
    return run


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


def test_run_folder_holds_log_population_best_and_final(uninterrupted):
    store = RunStore(uninterrupted)
    log = store.candidates()
    assert len(log) == 20
    rejected = [c for c in log if not c.scored]
    assert any(c.text == INVALID and "exp" in c.reason for c in rejected)
    state = json.loads((uninterrupted / "state.json").read_text())
    assert state["done"] and len(state["population"]) == 5 and len(state["rng"][1]) == 625
    best = min((c for c in log if c.scored), key=lambda c: c.fitness)
    assert (uninterrupted / "best.txt").read_text().strip() == best.text
    final = json.loads((uninterrupted / "final.json").read_text())
    assert set(final["held_out_perplexity"]) == {best.text, "uniform", "owl"}
    assert len({c.text for c in log}) == len(log)  # no duplicate candidates


def test_kill_9_then_resume_gives_the_same_population(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "killed"
    proc = subprocess.Popen(cli_search(run, tiny_model_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env())
    log = run / "candidates.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 7:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final.json").exists(), "the run finished before it could be killed"
    resume = [sys.executable, "-m", "workbench.cli", "search", "--resume", str(run), "--device", "cpu", "--quiet"]
    subprocess.run(resume, check=True, capture_output=True, env=_env())
    assert population(run) == population(uninterrupted)
    killed_log = [(c.text, c.fitness) for c in RunStore(run).candidates()]
    assert killed_log == [(c.text, c.fitness) for c in RunStore(uninterrupted).candidates()]


def test_ctrl_c_stops_after_the_candidate_then_resume_finishes_the_same(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "interrupted"
    proc = subprocess.Popen(cli_search(run, tiny_model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), text=True)
    log = run / "candidates.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 7):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in out
    state = json.loads((run / "state.json").read_text())
    assert len(log.read_text().splitlines()) == state["logged"] and not state["done"]
    resume = [sys.executable, "-m", "workbench.cli", "search", "--resume", str(run), "--device", "cpu", "--quiet"]
    subprocess.run(resume, check=True, capture_output=True, env=_env())
    assert population(run) == population(uninterrupted)


def test_parallel_evaluators_give_the_same_run_as_one(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "two-devices"
    subprocess.run(cli_search(run, tiny_model_dir, "--devices", "cpu,cpu"), check=True, capture_output=True,
                   env=_env())
    assert population(run) == population(uninterrupted)
    assert [(c.text, c.fitness) for c in RunStore(run).candidates()] == \
        [(c.text, c.fitness) for c in RunStore(uninterrupted).candidates()]


def test_new_search_refuses_an_existing_run_and_foreign_folders(tmp_path, uninterrupted):
    with pytest.raises(WorkbenchError, match="--resume"):
        RunStore(uninterrupted).create({})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"format": "something-else"}')
    with pytest.raises(WorkbenchError, match="not a dsa-workbench search run"):
        RunStore(foreign).settings()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.json").write_text((uninterrupted / "run.json").read_text())
    (corrupt / "state.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="corrupt"):
        RunStore(corrupt).load_state()


class SlowEvaluator:
    """Each candidate takes `seconds`, calling check() every 10 ms like a forward pass does."""

    workers = 1

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.checks = 0

    def evaluate(self, texts, check):
        out = []
        for text in texts:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                check()
                self.checks += 1
                time.sleep(0.01)
            out.append((float(len(text)), (0.5,), self.seconds, None))
        return out


def controller(tmp_path, seconds=30.0):
    settings_ = SearchSettings(sparsity=0.5, population=3, generations=2)
    store = RunStore(tmp_path / "run")
    store.create(settings_.to_json())
    seen = []
    evaluator = SlowEvaluator(seconds)
    search = Search(settings_, store, evaluator, on_event=seen.append)
    return SearchController(search), evaluator, seen


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_stop_during_a_candidate_responds_within_a_second(tmp_path):
    ctl, evaluator, seen = controller(tmp_path)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 5)
    start = time.monotonic()
    ctl.stop()
    assert ctl.join(1.0)
    assert time.monotonic() - start < 1.0
    assert any(isinstance(e, ev.SearchStoppedEvent) for e in seen)
    assert RunStore(tmp_path / "run").candidates() == []  # the candidate in flight is not logged


def test_pause_and_resume_respond_within_a_second(tmp_path):
    ctl, evaluator, _ = controller(tmp_path)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 5)
    ctl.pause()
    time.sleep(0.3)
    frozen = evaluator.checks
    time.sleep(0.7)
    assert evaluator.checks <= frozen + 1
    ctl.resume()
    assert wait_for(lambda: evaluator.checks > frozen + 5, timeout=1.0)
    ctl.stop()
    assert ctl.join(1.0)


def test_step_runs_one_candidate_then_pauses(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.05)
    ctl.pause()
    ctl.start()
    time.sleep(0.2)
    assert not any(isinstance(e, ev.CandidateScored) for e in seen)
    ctl.step()
    assert wait_for(lambda: any(isinstance(e, ev.CandidateScored) for e in seen), timeout=2.0)
    time.sleep(0.3)
    assert sum(isinstance(e, ev.CandidateScored) for e in seen) == 1
    assert ctl.control.paused
    ctl.resume()
    assert ctl.join(5.0)
    assert sum(isinstance(e, ev.CandidateScored) for e in seen) == 6
    assert isinstance(seen[-1], ev.SearchFinished)


def test_stop_after_candidate_finishes_the_one_in_flight(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.3)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 2)
    ctl.stop(after_candidate=True)
    assert ctl.join(2.0)
    assert len(RunStore(tmp_path / "run").candidates()) == 1


def test_evaluator_errors_end_the_thread_with_an_error_event(tmp_path):
    ctl, evaluator, seen = controller(tmp_path)

    def broken(texts, check):
        raise RuntimeError("device lost")

    evaluator.evaluate = broken
    ctl.start()
    assert ctl.join(2.0)
    assert isinstance(ctl.error, RuntimeError)
    assert any(isinstance(e, ev.SearchError) and "device lost" in e.message for e in seen)
