"""The search engine: variation operators, durability (kill -9 and resume), control latency."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.allocation import AllocationFunction
from engine.errors import WorkbenchError
from engine.search import events as ev
from engine.search.controller import SearchController
from engine.search.core import MAX_ERRORS_IN_A_ROW, attempt
from engine.search.search import Search, SearchSettings
from engine.search.genome import crossover, mutate, random_function
from engine.search.store import RunStore
from waiting import join_while_progressing, scaled, wait_for

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
    subprocess.run(cli_search(run, tiny_model_dir, "--tasks", "tests/data/six_facts.jsonl", "--limit", "2"),
                   check=True, capture_output=True, env=_env())
    return run


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd()}


@pytest.mark.slow
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
    assert set(final["held_out_perplexity"]) == {best.text, "uniform", "owl", "atp", "dlp", "first"}
    assert final["second_corpus"]["corpus"] == "wikipedia"
    assert final["second_corpus"]["held_out_perplexity"].keys() == final["held_out_perplexity"].keys()
    assert final["fitness_to_held_out"] == final["held_out_perplexity"][best.text] / best.fitness
    assert set(final["zero_shot"]) == {best.text, "uniform", "owl", "atp", "dlp", "first"}
    assert all(s["six_facts"]["samples"] == 2 and s["six_facts"]["error"] is None for s in final["zero_shot"].values())
    assert len({c.text for c in log}) == len(log)  # no duplicate candidates


def resume_command(run, *extra):
    return [sys.executable, "-m", "workbench.cli", "search", "--resume", str(run), "--device", "cpu", "--quiet", *extra]


def same_run(run, reference) -> bool:
    return ([(c.text, c.fitness, c.reason) for c in RunStore(run).candidates()] ==
            [(c.text, c.fitness, c.reason) for c in RunStore(reference).candidates()]
            and population(run) == population(reference))


def interrupted(run, tiny_model_dir, sig: int, lines: int = 7) -> subprocess.Popen:
    """A CLI search sent `sig` once its log has `lines` lines."""
    proc = subprocess.Popen(cli_search(run, tiny_model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), text=True)
    log = run / "candidates.jsonl"
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= lines):
        time.sleep(0.01)
    proc.send_signal(sig)
    return proc


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_population(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "killed"
    interrupted(run, tiny_model_dir, signal.SIGKILL).communicate()
    assert not (run / "final.json").exists(), "the run finished before it could be killed"
    subprocess.run(resume_command(run), check=True, capture_output=True, env=_env())
    assert same_run(run, uninterrupted)


KILL_AT = {
    # while preparing: the caches are being built, nothing may be written yet
    "preparing": ("engine.search.evaluator", "SessionEvaluator", "prepare", 1),
    # between the first log line and the checkpoint that counts it
    "first log line": ("engine.search.store", "RunStore", "append", 1),
    # in the forward pass of the third candidate
    "candidate": ("engine.session", "Session", "perplexity", 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_AT)
def test_a_kill_at_each_point_of_a_search_then_resume_gives_the_same_log(point, tmp_path, tiny_model_dir,
                                                                         uninterrupted):
    """SIGKILL from inside the process at an exact point of its life, then resume (or start again when
    nothing was written): the log and population equal an uninterrupted run's."""
    module, cls, method, call = KILL_AT[point]
    run = tmp_path / "run"
    script = (f"import os, signal, sys, {module} as m\n"
              f"original, calls = m.{cls}.{method}, []\n"
              f"def killing(*a, **k):\n"
              f"    calls.append(1)\n"
              f"    if {method!r} != 'append' and len(calls) == {call}: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"    out = original(*a, **k)\n"
              f"    if len(calls) == {call}: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"    return out\n"
              f"m.{cls}.{method} = killing\n"
              f"from workbench.cli import main\n"
              f"sys.exit(main(sys.argv[1:]))\n")
    argv = cli_search(run, tiny_model_dir)[3:]  # after `python -m workbench.cli`
    killed = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, env=_env())
    assert killed.returncode == -signal.SIGKILL
    if point == "preparing":
        assert not (run / "run.json").exists()
        subprocess.run(cli_search(run, tiny_model_dir), check=True, capture_output=True, env=_env())
    else:
        assert (run / "run.json").exists() and (run / "state.json").exists()
        subprocess.run(resume_command(run), check=True, capture_output=True, env=_env())
    assert (run / "candidates.jsonl").read_text().count("\n") == 20
    assert same_run(run, uninterrupted)


@pytest.mark.slow
def test_ctrl_c_stops_after_the_candidate_then_resume_finishes_the_same(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "interrupted"
    proc = interrupted(run, tiny_model_dir, signal.SIGINT)
    out, err = proc.communicate(timeout=scaled(60))
    assert proc.returncode == 130, err
    assert "--resume" in out
    state = json.loads((run / "state.json").read_text())
    assert len((run / "candidates.jsonl").read_text().splitlines()) == state["logged"] and not state["done"]
    subprocess.run(resume_command(run), check=True, capture_output=True, env=_env())
    assert population(run) == population(uninterrupted)


@pytest.fixture(scope="module")
def ray_session():
    import ray  # in the test extra: never skipped

    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_a_cluster_of_two_workers_gives_the_single_device_run(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "cluster"
    subprocess.run(cli_search(run, tiny_model_dir, "--cluster", "local", "--workers", "2", "--tasks",
                              "tests/data/six_facts.jsonl", "--limit", "2"), check=True, capture_output=True, env=_env())
    assert same_run(run, uninterrupted)
    accuracy = lambda folder: {m: s["six_facts"]["accuracy"]  # noqa: E731
                               for m, s in json.loads((folder / "final.json").read_text())["zero_shot"].items()}
    assert accuracy(run) == accuracy(uninterrupted)  # the final zero-shot scores, on a Ray worker


@pytest.mark.slow
def test_the_profile_search_on_the_cluster_gives_the_single_device_run(tmp_path, tiny_model_dir):
    profile = ["--strategy", "evopress", "--stages", "64:2", "--generations", "3"]
    for run, extra in ((tmp_path / "one", []), (tmp_path / "two", ["--cluster", "local", "--workers", "2"])):
        subprocess.run(cli_search(run, tiny_model_dir, *profile, *extra), check=True, capture_output=True, env=_env())
    assert same_run(tmp_path / "two", tmp_path / "one")
    assert all(c.text.startswith("profile:") for c in RunStore(tmp_path / "two").candidates())


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_nothing_is_lost_or_scored_twice(ray_session, tmp_path, uninterrupted):
    from engine.search.start import search_controller, stored_settings

    settings = stored_settings(RunStore(uninterrupted))
    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, ev.CandidateScored) and sum(isinstance(e, ev.CandidateScored) for e in seen) == 4:
            ray_session.kill(controller.search.evaluator.actors[0])  # mid-run, from the search thread

    controller = search_controller(str(tmp_path / "run"), settings, cluster="local", workers=2, on_event=on_event)
    controller.start()
    # a replacement worker loads the model before it joins: as long as the search goes on, however slowly
    assert join_while_progressing(controller, seen) and controller.state == "finished", seen[-1]
    assert same_run(tmp_path / "run", uninterrupted)
    workers = [e for e in seen if isinstance(e, ev.WorkersChanged)]
    assert workers[0].total == 2 and workers[-1].failed == 1
    assert any(w.starting == 1 for w in workers)  # a replacement was started (it joins once it has loaded)


@pytest.mark.slow
def test_stop_during_parallel_evaluation_then_resume_on_one_device(ray_session, tmp_path, tiny_model_dir,
                                                                     uninterrupted):
    from engine.search.start import search_controller, stored_settings

    settings = stored_settings(RunStore(uninterrupted))
    seen = []
    controller = search_controller(str(tmp_path / "run"), settings, cluster="local", workers=2, on_event=seen.append)
    controller.start()
    assert wait_for(lambda: sum(isinstance(e, ev.CandidateScored) for e in seen) >= 3, timeout=300)
    t0 = time.monotonic()
    controller.stop()
    assert controller.join(scaled(10)) and time.monotonic() - t0 < scaled(5)
    assert controller.state == "stopped" and seen[-1].resumable
    subprocess.run(resume_command(tmp_path / "run"), check=True, capture_output=True, env=_env())
    assert same_run(tmp_path / "run", uninterrupted)


@pytest.mark.slow
def test_a_single_device_run_resumed_on_the_cluster(tmp_path, tiny_model_dir, uninterrupted):
    run = tmp_path / "run"
    interrupted(run, tiny_model_dir, signal.SIGKILL).communicate()
    subprocess.run(resume_command(run, "--cluster", "local", "--workers", "2"), check=True, capture_output=True,
                   env=_env())
    assert same_run(run, uninterrupted)


def test_an_unreachable_cluster_is_one_line(capsys, tmp_path, tiny_model_dir):
    from workbench.cli import main

    code = main(cli_search(tmp_path / "run", tiny_model_dir, "--cluster", "127.0.0.1:1")[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_new_search_refuses_an_existing_run_and_foreign_folders(tmp_path, uninterrupted):
    with pytest.raises(WorkbenchError, match="--resume"):
        RunStore(uninterrupted).check_new()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"format": "something-else"}')
    with pytest.raises(WorkbenchError, match="not a dsa-workbench search run"):
        RunStore(foreign).settings()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="not empty"):
        RunStore(other).check_new()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.json").write_text((uninterrupted / "run.json").read_text())
    (corrupt / "state.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="corrupt"):
        RunStore(corrupt).load_state()


def test_leftovers_of_a_start_that_never_completed_do_not_block_a_new_one(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "state.json").write_text("{}")  # killed before run.json was written
    (folder / ".run.json.abc123").write_text("{")
    store = RunStore(folder)
    store.check_new()
    store.create({"sparsity": 0.5}, {"queue": [], "evaluated": 0, "logged": 0, "done": False, "best": None})
    assert store.exists and store.load_state()["evaluated"] == 0


class SlowEvaluator:
    """Each candidate takes `seconds`, calling check() every 10 ms like a forward pass does."""

    workers = 1

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.checks = 0

    def ratios(self, texts):
        return [(zlib.crc32(t.encode()) % 1000 / 1000,) for t in texts]

    def distilled(self, methods):
        return []

    def evaluate(self, texts, check, stage=0):
        def score(text):
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                check()
                self.checks += 1
                time.sleep(0.01)
            return float(len(text)), self.ratios([text])[0]

        return [attempt(lambda: score(text)) for text in texts]


def controller(tmp_path, seconds=30.0, prepare_seconds=0.0, population=3, generations=2):
    """A real controller and search over a slow stand-in evaluator; `prepare_seconds` of preparation that
    checks the control like calibration does."""
    settings_ = SearchSettings(sparsity=0.5, population=population, generations=generations)
    store = RunStore(tmp_path / "run")
    seen = []
    evaluator = SlowEvaluator(seconds)

    def prepare(control):
        end = time.monotonic() + prepare_seconds
        while time.monotonic() < end:
            control.checkpoint()
            time.sleep(0.01)
        return Search(settings_, store, evaluator, held_out=lambda methods, check, corpus=None: {}, on_event=seen.append)

    return SearchController(prepare, store, seen.append), evaluator, seen


def states(seen):
    return [e.state for e in seen if isinstance(e, ev.StateChanged)]


def test_stop_during_a_candidate_responds_within_a_second(tmp_path):
    ctl, evaluator, seen = controller(tmp_path)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 5)
    start = time.monotonic()
    ctl.stop()
    assert ctl.join(scaled(1.0))
    assert time.monotonic() - start < scaled(1.0)
    assert states(seen) == ["preparing", "running", "stopping", "stopped"]
    assert seen[-1].resumable and seen[-1].evaluated == 0
    assert RunStore(tmp_path / "run").candidates() == []  # the candidate in flight is not logged


def test_stop_while_preparing_leaves_no_run_folder(tmp_path):
    ctl, _, seen = controller(tmp_path, prepare_seconds=30.0)
    ctl.start()
    assert wait_for(lambda: states(seen) == ["preparing"])
    ctl.stop(after_candidate=True)  # no candidate yet: stops at once
    assert ctl.join(scaled(1.0))
    assert states(seen) == ["preparing", "stopping", "stopped"]
    assert not seen[-1].resumable and not (tmp_path / "run").exists()


def test_pause_is_announced_once_the_search_has_paused_and_resume_once_it_works_again(tmp_path):
    ctl, evaluator, seen = controller(tmp_path)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 5)
    ctl.pause()
    assert wait_for(lambda: states(seen)[-1] == "paused")
    frozen = evaluator.checks
    time.sleep(0.5)
    assert evaluator.checks <= frozen + 1
    ctl.resume()
    assert wait_for(lambda: evaluator.checks > frozen + 5, timeout=1.0)
    assert states(seen)[-2:] == ["paused", "running"]
    ctl.stop()
    assert ctl.join(scaled(1.0))


def test_pause_then_step_ends_paused_every_time(tmp_path):
    """The reported race: pause during a candidate, then step. The engine announces "paused" only
    once its thread is waiting, so a state that follows the events never sticks at "stepping"."""
    ctl, evaluator, seen = controller(tmp_path, seconds=0.05, generations=5)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 0)
    for cycle in range(3):
        ctl.pause()
        assert wait_for(lambda: states(seen)[-1] == "paused"), states(seen)
        scored = sum(isinstance(e, ev.CandidateScored) for e in seen)
        ctl.step()
        assert wait_for(lambda: sum(isinstance(e, ev.CandidateScored) for e in seen) > scored)
        assert wait_for(lambda: states(seen)[-1] == "paused"), states(seen)
        assert "stepping" in states(seen)[-2:]
    ctl.stop()
    assert ctl.join(scaled(1.0))
    assert states(seen)[-2:] == ["stopping", "stopped"]


def test_step_then_stop(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.5)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 2)
    ctl.step()  # while running: this candidate, then pause
    assert states(seen)[-1] == "stepping"
    ctl.stop()
    assert ctl.join(scaled(1.0))
    assert states(seen) == ["preparing", "running", "stepping", "stopping", "stopped"]


def test_step_runs_one_candidate_then_pauses(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.05)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 0)
    ctl.pause()
    assert wait_for(lambda: states(seen)[-1] == "paused")
    before = sum(isinstance(e, ev.CandidateScored) for e in seen)
    ctl.step()
    assert wait_for(lambda: sum(isinstance(e, ev.CandidateScored) for e in seen) == before + 1, timeout=2.0)
    assert wait_for(lambda: states(seen)[-1] == "paused")
    time.sleep(0.3)
    assert sum(isinstance(e, ev.CandidateScored) for e in seen) == before + 1
    ctl.resume()
    assert ctl.join(scaled(5.0))
    assert sum(isinstance(e, ev.CandidateScored) for e in seen) == 6
    assert isinstance(seen[-2], ev.SearchFinished) and states(seen)[-1] == "finished"


def test_stop_after_candidate_finishes_the_one_in_flight(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.3)
    ctl.start()
    assert wait_for(lambda: evaluator.checks > 2)
    ctl.stop(after_candidate=True)
    assert ctl.join(scaled(2.0))
    assert len(RunStore(tmp_path / "run").candidates()) == 1
    assert seen[-1].state == "stopped" and seen[-1].evaluated == 1


def test_a_broken_evaluator_ends_the_search_as_failed(tmp_path):
    ctl, evaluator, seen = controller(tmp_path)

    def broken(texts, check, stage=0):
        raise RuntimeError("device lost")

    evaluator.evaluate = broken
    ctl.start()
    assert ctl.join(scaled(2.0))
    assert isinstance(ctl.error, RuntimeError)
    assert seen[-1].state == "failed" and "device lost" in seen[-1].message and seen[-1].resumable


def test_every_failure_of_a_candidate_is_a_logged_rejection_and_the_search_goes_on(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.0)
    calls = []

    def flaky(texts, check, stage=0):
        def score(text):
            calls.append(text)
            if len(calls) == 2:
                raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
            if len(calls) == 3:
                return float("nan"), evaluator.ratios([text])[0]
            return 1.0 + len(calls), evaluator.ratios([text])[0]
        return [attempt(lambda: score(t)) for t in texts]

    evaluator.evaluate = flaky
    ctl.start()
    assert ctl.join(scaled(5.0)) and ctl.state == "finished"
    log = RunStore(tmp_path / "run").candidates()
    assert len(log) == 6
    assert log[1].reason.startswith("LinAlgError: linalg.svd") and log[2].reason == "fitness is nan"
    assert all(c.scored for i, c in enumerate(log) if i not in (1, 2))


def test_unexpected_errors_in_a_row_end_the_search_as_failed_and_a_resume_scores_those_candidates(tmp_path):
    ctl, evaluator, seen = controller(tmp_path, seconds=0.0, population=14, generations=1)
    working, calls = evaluator.evaluate, []

    def failing_after_two(texts, check, stage=0):  # the machine fails from the third candidate on
        calls.extend(texts)
        return working(texts, check, stage) if len(calls) <= 2 else [attempt(lambda: 1 / 0) for _ in texts]

    evaluator.evaluate = failing_after_two
    ctl.start()
    assert ctl.join(scaled(5.0)) and ctl.state == "failed"
    assert f"{MAX_ERRORS_IN_A_ROW} candidates in a row failed" in seen[-1].message and seen[-1].resumable
    assert seen[-1].evaluated == 2  # checkpointed as it was before the failures
    log = RunStore(tmp_path / "run").candidates()
    assert len(log) == 2 + MAX_ERRORS_IN_A_ROW  # they stay in the log, to be read, until the run resumes
    assert all(c.reason == "ZeroDivisionError: division by zero" for c in log[2:])
    failed = [c.text for c in log[2:]]
    state_path = tmp_path / "run" / "state.json"  # killed amid a run of failures, then resumed: still failing
    amid_failures = {**json.loads(state_path.read_text()), "errors_in_a_row": MAX_ERRORS_IN_A_ROW - 1}
    state_path.write_text(json.dumps(amid_failures))
    amid, still_failing, seen = controller(tmp_path, seconds=0.0, population=14, generations=1)
    still_failing.evaluate = lambda texts, check, stage=0: [attempt(lambda: 1 / 0) for _ in texts]
    amid.start()
    assert amid.join(scaled(5.0)) and amid.state == "failed"
    assert f"{MAX_ERRORS_IN_A_ROW} candidates in a row failed" in seen[-1].message
    again = controller(tmp_path, seconds=0.0, population=14, generations=1)[0]
    again.start()
    assert again.join(scaled(5.0)) and again.state == "finished"
    log = RunStore(tmp_path / "run").candidates()
    assert all(c.reason is None for c in log) and [c.text for c in log[2:2 + MAX_ERRORS_IN_A_ROW]] == failed
