"""Search quality features: profiles and protect baselines, level switches, duplicate candidates,
selection stages, the profile search (evopress), distillation and transfer."""

from __future__ import annotations

import json
import random
import zlib

import pytest

from engine.allocation.mapping import rebalance
from engine.allocation.profiles import block_form_ratios, is_block_form, parse_block_form, profile_text, protect_levels
from engine.errors import InvalidFunctionError, WorkbenchError
from engine.search import events as ev
from engine.search.control import Control, SearchState, SearchStopped
from engine.search.core import attempt
from engine.search.levels import mutate_profile, start_methods
from engine.search.search import Search, SearchSettings, SelectionStage, parse_search_stages
from engine.search.store import RunStore
from workbench.cli import main

WEIGHTS = [1000] * 6


def weighted_mean(ratios, weights=WEIGHTS):
    return sum(r * w for r, w in zip(ratios, weights)) / sum(weights)


def test_protect_forms_keep_the_mean_and_the_protected_level():
    first = block_form_ratios("first:0.3", WEIGHTS, 0.7)
    assert first[0] == pytest.approx(0.3) and weighted_mean(first) == pytest.approx(0.7, abs=1e-9)
    assert len(set(round(r, 9) for r in first[1:])) == 1
    ends = block_form_ratios("ends:0.4", WEIGHTS, 0.6)
    assert ends[0] == pytest.approx(0.4) and ends[-1] == pytest.approx(0.4)
    assert protect_levels(0.7) == [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    with pytest.raises(WorkbenchError, match="other blocks would need"):
        block_form_ratios("ends:0.0", [1000] * 3, 0.7)


def test_a_profile_moves_to_another_target_by_one_shift():
    profile = [0.5, 0.72, 0.74, 0.7, 0.68, 0.86]
    assert weighted_mean(profile) == pytest.approx(0.7)
    same = block_form_ratios(profile_text(profile), WEIGHTS, 0.7)
    assert same == pytest.approx(profile)
    lower = block_form_ratios(profile_text(profile), WEIGHTS, 0.5)
    assert [a - b for a, b in zip(profile, lower)] == pytest.approx([0.2] * 6)
    for bad in ("profile:", "profile:0.5,x", "profile:0.5,1.5", "first:0.2,0.3"):
        with pytest.raises(InvalidFunctionError):
            block_form_ratios(bad, WEIGHTS, 0.7)
    with pytest.raises(WorkbenchError, match="6 blocks"):
        block_form_ratios("profile:0.7,0.7", WEIGHTS, 0.7)


def test_level_switches_move_equal_numbers_of_weights_keep_the_mean_and_stay_on_each_units_grid():
    rng = random.Random(0)
    weights = [1000] * 8 + [500] * 2  # units of two sizes: a 1000-unit moves 0.01 where a 500-unit moves 0.02
    steps = [0.01] * 8 + [0.02] * 2
    text = profile_text(rebalance([0.7] * 10, weights, 0.7))
    moved = set()
    for _ in range(200):
        text = mutate_profile(text, weights, 0.02, rng)
        values = [float(v) for v in text.split(":")[1].split(",")]
        assert weighted_mean(values, weights) == pytest.approx(0.7, abs=1e-9)
        assert all(abs((v - 0.7) / st - round((v - 0.7) / st)) < 1e-6 for v, st in zip(values, steps))
        assert all(0.01 <= v <= 0.99 for v in values)
        moved |= {i for i, v in enumerate(values) if abs(v - 0.7) > 1e-9}
    assert moved == set(range(10))  # switches cross sizes


def test_stage_specs_are_checked():
    assert parse_search_stages("512:8,1024:4") == (SelectionStage(512, 8), SelectionStage(1024, 4))
    for bad in ("512", "512:8,256:4", "512:4,1024:8", "x:1", "0:3"):
        with pytest.raises(WorkbenchError, match="--stages"):
            parse_search_stages(bad)
    with pytest.raises(WorkbenchError, match="fewer tokens than the fitness split"):
        SearchSettings(sparsity=0.7, population=8, stages="4096:4")


def test_settings_parse_text_once_and_keep_the_stored_form():
    settings = SearchSettings(0.7, population=24, stages="auto", tasks="general_facts, arc_easy",
                              seeds=("abs|var|tanh", "abs | var | tanh"))
    assert settings.stages == (SelectionStage(512, 8),) and settings.stages_are_auto
    assert settings.tasks == ("general_facts", "arc_easy") and settings.seeds == ("abs | var | tanh",)
    stored = settings.to_json()
    assert stored["stages"] == "512:8" and SearchSettings.from_json(stored) == settings
    assert SearchSettings.from_json({**stored, "stages": ""}).stages == ()  # runs from before (text, or none)
    assert not SearchSettings(0.7, population=4).stages_are_auto  # no stages are not "auto"
    with pytest.raises(WorkbenchError, match="zero-shot limit"):
        SearchSettings(0.7, limit=-3)


class HashScores:
    """A deterministic stand-in evaluator: fitness from the block ratios (lower when block 0 is a little
    sparser than the rest, so a search has somewhere to go); stage 0 adds a fixed noise."""

    workers = 1

    def __init__(self, collide: bool = False):
        self.scored: list[tuple[str, int]] = []
        self.collide = collide

    def unit_params(self, granularity):
        return WEIGHTS

    def profiles(self, texts, granularity):
        return [None if isinstance(r, str) else profile_text(r) for r in self.ratios(texts)]

    def distilled(self, methods):
        return ["abs | mean | no_op"]  # one function stands for every simple allocation

    def _ratios(self, text):
        if is_block_form(text):
            return block_form_ratios(text, WEIGHTS, 0.7)
        h = zlib.crc32(text.encode()) % (7 if self.collide else 1000)
        return rebalance([0.5 + 0.0004 * h] + [0.7] * 5, WEIGHTS, 0.7)

    def ratios(self, texts):
        out = []
        for text in texts:
            try:
                out.append(tuple(self._ratios(text)))
            except WorkbenchError as exc:  # as the session evaluator: the reason instead of ratios
                out.append(str(exc))
        return out

    def evaluate(self, texts, check, stage=0):
        def score(text):
            self.scored.append((text, stage))
            r = self._ratios(text)
            noise = 0.0 if stage else 0.01 * (zlib.crc32(text.encode()) % 7)
            return 10 - 5 * (r[0] - 0.7) + 10 * sum((x - 0.7) ** 2 for x in r) + noise, r
        return [attempt(lambda: score(t)) for t in texts]


class StopAfter(Control):
    """A running control that stops the search after `n` candidates."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.enter(SearchState.RUNNING)

    def candidate_done(self):
        self.n -= 1
        if self.n == 0:
            self.stop()
        super().candidate_done()


def run_search(tmp_path, evaluator, name="run", control=None, **settings):
    store = RunStore(tmp_path / name)
    seen = []
    search = Search(SearchSettings(sparsity=0.7, **settings), store, evaluator, held_out=lambda m, c, corpus=None: {},
                    on_event=seen.append)
    search.begin()
    search.run(control or Control())
    return store.candidates(), seen


def test_candidates_with_the_same_ratios_are_scored_once_and_say_which_they_repeat(tmp_path):
    evaluator = HashScores(collide=True)
    log, _ = run_search(tmp_path, evaluator, population=12, generations=2)
    duplicates = [c for c in log if c.duplicate_of is not None]
    assert duplicates and len(evaluator.scored) == len(log) - len(duplicates)
    for c in duplicates:
        original = log[c.duplicate_of]
        assert original.duplicate_of is None and original.fitness == c.fitness and original.index < c.index
        assert [round(r, 3) for r in original.ratios] == [round(r, 3) for r in c.ratios]


def test_stages_score_everyone_cheaply_and_only_the_kept_on_the_whole_split(tmp_path):
    evaluator = HashScores()
    log, seen = run_search(tmp_path, evaluator, population=6, generations=2, stages="512:2")
    for generation in (0, 1):
        stages = [c.stage for c in log if c.generation == generation]
        assert stages.count(0) == 6 and stages.count(1) == 2
        cheap = sorted((c for c in log if c.generation == generation and c.stage == 0 and c.duplicate_of is None),
                       key=lambda c: c.fitness)  # a duplicate does not go on: its allocation was scored
        assert {c.text for c in log if c.generation == generation and c.stage == 1} == {c.text for c in cheap[:2]}
    assert {stage for _, stage in evaluator.scored} == {0, 1}
    best = [e for e in seen if isinstance(e, ev.NewBest)]
    assert best and all(e.candidate.stage == 1 for e in best)
    assert [e.stage for e in seen if isinstance(e, ev.StageDone)] == [0, 0]


def test_the_profile_search_keeps_the_mean_improves_its_parent_and_resumes_as_if_uninterrupted(tmp_path):
    whole, seen = run_search(tmp_path, HashScores(), "whole", strategy="evopress", population=4, generations=5,
                             stages="512:2")
    starts = [c for c in whole if c.generation == 0 and c.stage == 0]  # the simple allocations, grids and all
    assert [c.text for c in starts] == list(dict.fromkeys(p for p in HashScores().profiles(start_methods(0.7, 6), "block")
                                                         if p))
    assert len(starts) > len(start_methods(0.7, 6)) - 4  # the hashed owl, alpha, dlp may collide
    for c in whole:
        assert c.text.startswith("profile:") and weighted_mean(c.ratios) == pytest.approx(0.7, abs=1e-9)
    bests = [e.best for e in seen if isinstance(e, ev.GenerationDone) and e.best is not None]
    parents = [min(bests[: i + 1]) for i in range(len(bests))]
    first_parent = min(c.fitness for c in whole if c.generation == 0 and c.stage == 1)
    assert parents[-1] < first_parent  # found something better than the best start
    with pytest.raises(SearchStopped):
        run_search(tmp_path, HashScores(), "parts", StopAfter(7), strategy="evopress", population=4,
                   generations=5, stages="512:2")
    resumed, _ = run_search(tmp_path, HashScores(), "parts", strategy="evopress", population=4, generations=5,
                            stages="512:2")
    assert [(c.text, c.fitness, c.stage) for c in resumed] == [(c.text, c.fitness, c.stage) for c in whole]


def test_the_function_searches_start_from_the_seeds_and_the_functions_nearest_the_simple_allocations(tmp_path):
    for strategy in ("evolution", "random", "hybrid"):
        log, _ = run_search(tmp_path, HashScores(), strategy, strategy=strategy, population=4, generations=1,
                            seeds=("abslog | var | atan",))
        first = [c.text for c in log if c.generation == 0 and c.stage == 0]
        assert first[:2] == ["abslog | var | atan", "abs | mean | no_op"] and len(first) == 4


def test_the_hybrid_search_evolves_functions_then_refines_the_best_as_a_profile_and_resumes(tmp_path):
    settings = dict(strategy="hybrid", population=4, generations=5, stages="512:2")
    whole, seen = run_search(tmp_path, HashScores(), "whole", **settings)
    assert SearchSettings(sparsity=0.7, **settings).hybrid_switch == 3
    functions = [c for c in whole if c.generation < 3]
    profiles = [c for c in whole if c.generation >= 3]
    assert functions and profiles and not any(c.text.startswith("profile:") for c in functions)
    assert all(c.text.startswith("profile:") for c in profiles)
    best_function = min((c for c in functions if c.stage == 1), key=lambda c: (c.fitness, c.text))
    parent = block_form_ratios(profile_text(best_function.ratios), WEIGHTS, 0.7)
    for c in profiles:  # offspring of the best function's ratios (or of a better profile), by level switches
        assert weighted_mean(c.ratios) == pytest.approx(0.7, abs=1e-9)
        assert sum(abs(a - b) for a, b in zip(c.ratios, parent)) <= 2 * 3 * 0.02 * 2 + 1e-6
    with pytest.raises(SearchStopped):
        run_search(tmp_path, HashScores(), "parts", StopAfter(len(functions) + 2), **settings)
    resumed, _ = run_search(tmp_path, HashScores(), "parts", **settings)
    assert [(c.text, c.fitness, c.stage) for c in resumed] == [(c.text, c.fitness, c.stage) for c in whole]


class GroupScores(HashScores):
    """HashScores whose functions give each block's two groups (a quarter and three quarters of its weights) one
    ratio each, as a `| groups` function may: their profiles come back per group, whatever was asked."""

    def unit_params(self, granularity):
        return WEIGHTS if granularity == "block" else [p for w in WEIGHTS for p in (w // 4, w - w // 4)]

    def profiles(self, texts, granularity):
        return [None if isinstance(r, str) else profile_text([v for x in r for v in (x, x)])
                for r in self.ratios(texts)]

    def _ratios(self, text):
        values = parse_block_form(text)[1] if is_block_form(text) else ()
        if len(values) == 2 * len(WEIGHTS):  # a group profile: each block's weighted mean
            g = self.unit_params("group")
            return [(values[2 * i] * g[2 * i] + values[2 * i + 1] * g[2 * i + 1]) / w for i, w in enumerate(WEIGHTS)]
        return super()._ratios(text)


def test_the_hybrid_refines_a_function_per_group_where_the_function_gives_the_groups_their_own_ratios(tmp_path):
    log, _ = run_search(tmp_path, GroupScores(), strategy="hybrid", population=4, generations=4, stages="512:2")
    profiles = [c for c in log if c.generation >= 2]
    group_weights = GroupScores().unit_params("group")
    assert profiles
    for c in profiles:  # per group, switches moving equal weights between groups (texts rounded to 4 decimals)
        values = parse_block_form(c.text)[1]
        assert len(values) == 2 * len(WEIGHTS)
        assert weighted_mean(values, group_weights) == pytest.approx(0.7, abs=1e-4)


def test_a_groups_function_comes_out_per_group_as_a_profile_and_a_plain_one_per_block(tiny_session):
    from engine.search.evaluator import SessionEvaluator

    evaluator = SessionEvaluator(tiny_session, 0.7, "wanda", "ppl")
    blocks = len(tiny_session.blocks)
    split, plain = "abs | mean | no_op | lam=0.2 | groups", "abs | mean | no_op | lam=0.2"
    for granularity, (per_split, per_plain) in (("block", (2, 1)), ("group", (2, 2)), ("linear", (7, 7))):
        for text, per_block in ((split, per_split), (plain, per_plain)):
            profile = evaluator.profiles([text], granularity)[0]
            assert len(parse_block_form(profile)[1]) == per_block * blocks
            function = tiny_session.allocate(text, 0.7).linear_ratios  # the profile is the function's allocation
            assert tiny_session.allocate(profile, 0.7).linear_ratios == pytest.approx(function, abs=1e-4)


def test_protect_baseline_picks_its_level_on_the_fitness_split(tiny_session):
    allocation = tiny_session.allocate("first", 0.6, "wanda")
    assert allocation.method.startswith("first:") and float(allocation.method[6:]) in protect_levels(0.6)
    assert weighted_mean(allocation.block_ratios, [b.params for b in tiny_session.blocks]) == pytest.approx(0.6)
    assert tiny_session.pruned is None  # picking leaves the session as it was


def test_the_profile_search_starts_from_every_simple_allocation_as_the_session_allocates_it(tiny_session):
    from engine.search.evaluator import SessionEvaluator

    methods = start_methods(0.7, len(tiny_session.blocks))
    assert methods[:4] == ["uniform", "owl", "alpha", "dlp"]
    assert {m.partition(":")[0] for m in methods[4:]} == {"atp", "first", "ends"}
    evaluator = SessionEvaluator(tiny_session, 0.7, "wanda", "ppl")
    for granularity, per_block in (("block", 1), ("group", 2), ("linear", 7)):
        for method, profile in zip(methods, evaluator.profiles(methods, granularity)):
            if profile is None:  # a protect level the other blocks cannot balance
                assert method.startswith(("first:", "ends:"))
                continue
            ratios = tiny_session.allocate(profile, 0.7).block_ratios
            assert len(parse_block_form(profile)[1]) == per_block * len(tiny_session.blocks)
            assert ratios == pytest.approx(tiny_session.allocate(method, 0.7).block_ratios, abs=1e-4)


def test_a_cheap_stage_scores_on_the_first_windows_of_the_fitness_split(tiny_session):
    from engine.search.evaluator import SessionEvaluator

    evaluator = SessionEvaluator(tiny_session, 0.6, "wanda", "ppl", stage_tokens=(64, None))
    evaluator.prepare(lambda *a: None)
    cheap = evaluator.evaluate(["uniform"], lambda *a: None, 0)[0]
    whole = evaluator.evaluate(["uniform"], lambda *a: None, 1)[0]
    tiny_session.prune(tiny_session.allocate("uniform", 0.6), "wanda")
    assert whole.fitness == pytest.approx(tiny_session.perplexity("fitness"))
    assert cheap.fitness == pytest.approx(tiny_session.perplexity("fitness", tokens=64)) != whole.fitness


@pytest.mark.slow
def test_distilling_a_functions_own_ratios_finds_a_function_as_close(tiny_session):
    from engine.allocation.distill import distill

    inputs = tiny_session.allocation_inputs("wanda")
    goal = tiny_session.allocate("abslog | mean | no_op | lam=0.2", 0.6).block_ratios
    found = distill(list(goal), inputs, 0.6)
    assert found.rmse < 0.01 and found.tried > 100
    assert tiny_session.allocate(found.function, 0.6).block_ratios == pytest.approx(found.ratios)


TINY = ["--seqlen", "64", "--calib-tokens", "512", "--eval-tokens", "256", "--device", "cpu", "--json", "--quiet"]


@pytest.mark.slow
def test_distill_command(capsys, tiny_model_dir):
    code = main(["distill", "--profile", "profile:0.4,0.7,0.7", "--sparsity", "0.6", "--model", str(tiny_model_dir),
                 *TINY])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["rmse"] < 0.1 and set(out["held_out_perplexity"]) == {"uniform", "profile", "function"}


def test_transfer_command_and_a_bad_profile(capsys, tiny_model_dir):
    tiny = ["--model", str(tiny_model_dir), *TINY]
    code = main(["transfer", "--method", "profile:0.4,0.7,0.7", "--sparsities", "0.5,0.6", "--metrics", "wanda",
                 *tiny])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [(r["metric"], r["sparsity"]) for r in out["rows"]] == [("wanda", 0.5), ("wanda", 0.6)]
    assert all(set(r["perplexity"]) == {"uniform", "profile:0.4,0.7,0.7"} for r in out["rows"])
    code = main(["distill", "--profile", "profile:0.4,x", *tiny])
    assert code == 2 and "profile" in capsys.readouterr().err


def test_a_small_distill_search_finds_the_function_it_was_given(tiny_session, monkeypatch):
    """The whole distill path with a search cut down to single-op chains (the full search is in the slow tier)."""
    from engine.allocation import distill as module

    monkeypatch.setattr(module, "PAIRS", 0)
    monkeypatch.setattr(module, "FINALISTS", 5)
    inputs = tiny_session.allocation_inputs("wanda")
    goal = tiny_session.allocate("abslog | mean | no_op | lam=0.2", 0.6).block_ratios
    found = module.distill(list(goal), inputs, 0.6)
    assert found.rmse < 0.01
    assert tiny_session.allocate(found.function, 0.6).block_ratios == pytest.approx(found.ratios)


def test_a_checkpoint_from_before_stages_resumes(tmp_path):
    """State written by the previous version (no stages, no duplicate check) continues as one search."""
    with pytest.raises(SearchStopped):
        run_search(tmp_path, HashScores(), "old", StopAfter(1), population=4, generations=2)
    path = tmp_path / "old" / "state.json"
    state = json.loads(path.read_text())
    state["this_generation"] = state.pop("stage_results")
    for key in ("stage", "by_ratios", "rejected"):
        del state[key]
    path.write_text(json.dumps(state))
    log, _ = run_search(tmp_path, HashScores(), "old", population=4, generations=2)
    assert len(log) == 8 and [c.generation for c in log] == [0] * 4 + [1] * 4


def test_profile_search_from_the_command_line_on_the_tiny_model(capsys, tmp_path, tiny_model_dir):
    run = tmp_path / "p60"
    code = main(["search", "--strategy", "evopress", "--population", "4", "--generations", "2", "--sparsity", "0.6",
                 "--stages", "64:2", "--model", str(tiny_model_dir), "--seqlen", "64", "--calib-tokens", "512",
                 "--fitness-tokens", "256", "--eval-tokens", "256", "--device", "cpu", "--run", str(run), "--quiet",
                 "--json"])
    assert code == 0
    log = RunStore(run).candidates()
    assert all(c.text.startswith("profile:") for c in log) and {c.stage for c in log} == {0, 1}
    final = json.loads((run / "final.json").read_text())
    assert final["best"]["text"].startswith("profile:") and final["best"]["stage"] == 1
    assert set(final["held_out_perplexity"]) == {final["best"]["text"], "uniform", "owl", "atp", "dlp", "first"}
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert settings["strategy"] == "evopress" and settings["stages"] == "64:2"


def test_a_group_profile_search_on_the_real_engine_keeps_the_mean_of_units_of_unequal_size(tmp_path, tiny_session):
    from engine.allocation.units import unit_params
    from engine.search.evaluator import SessionEvaluator

    evaluator = SessionEvaluator(tiny_session, 0.7, "wanda", "ppl")
    evaluator.prepare(lambda *a: None)
    store = RunStore(tmp_path / "group")
    settings = SearchSettings(sparsity=0.7, strategy="evopress", granularity="group", population=3, generations=2,
                              stages="")
    search = Search(settings, store, evaluator, held_out=lambda m, c, corpus=None: {}, on_event=lambda e: None)
    search.begin()
    search.run(Control())
    log = store.candidates()
    weights = unit_params(tiny_session.blocks, "group")
    assert len(set(weights[0::2])) == 1 and weights[0] != weights[1]  # attention and MLP differ in size
    assert all(len(c.ratios) == 6 and weighted_mean(c.ratios, weights) == pytest.approx(0.7, abs=1e-9)
               for c in log if c.scored)
    offspring = [c for c in log if c.generation == 1]
    assert offspring and any(c.ratios[0] != c.ratios[1] for c in offspring)  # attention and MLP apart
