"""One text per search event, the same in the CLI's lines and the TUI's status: counted from 1."""

from __future__ import annotations

from engine.search import events as ev
from engine.search.control import SearchState
from engine.search.search import SearchSettings
from workbench.event_text import event_text
from workbench.search_command import EventPrinter
from workbench.structured_command import StructuredPrinter

CANDIDATE = ev.Candidate(4, 0, "abs | var | tanh", 212.5, (0.7, 0.7, 0.7), 1.25, stage=0)


def test_candidates_generations_and_stages_count_from_one():
    assert event_text(ev.CandidateScored(CANDIDATE)) == \
        "candidate 5 (generation 1, stage 1, 1.2 s): 212.500 | abs | var | tanh"
    assert event_text(ev.CandidateScored(CANDIDATE), kl=True, total=40, note=" | kept 0.700").startswith(
        "candidate 5/40 (generation 1, stage 1, 1.2 s): KL 212.50000 | kept 0.700 |")
    assert event_text(ev.StageDone(0, 0, 8, 3, 0, 512, 210.0)) == \
        "generation 1, stage 1 done: 8 scored -> 3 go on (512 fitness tokens), best 210.000"
    assert event_text(ev.GenerationDone(2, 205.0, None, 8, 1)).startswith("generation 3 done: best 205.000, median -")
    assert event_text(ev.StateChanged(SearchState.STOPPED, evaluated=7, resumable=True)) == \
        "stopped after 7 candidates; s resumes from the checkpoint"
    assert event_text(ev.CheckpointWritten("run", 3)) is None


def test_the_cli_printers_print_the_same_lines(capsys):
    EventPrinter(SearchSettings(0.7), quiet=False)(ev.CandidateScored(CANDIDATE))
    StructuredPrinter(quiet=False)(ev.StageDone(0, 0, 8, 3, 2048, 1024, 0.05))
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("candidate 5/") and "(generation 1, stage 1, 1.2 s): 212.500 | abs" in err[0]
    assert err[1] == "== " + event_text(ev.StageDone(0, 0, 8, 3, 2048, 1024, 0.05), kl=True)
