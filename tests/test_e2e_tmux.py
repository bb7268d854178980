"""End to end in a real terminal: dsa-workbench in tmux on the real default model.

Drives the search through pause/step cycles beside a busy CPU, stops it, quits with ctrl+q and checks the exit
code and the run folder; types into the editor and the export pane at full speed beside two busy CPUs right
after a stop; opens the app at 80x24 without colour; and runs the structured mode from database to export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from waiting import scaled

pytestmark = pytest.mark.slow

if shutil.which("tmux") is None:  # never a silent skip: these are the only runs of the real app in a terminal
    raise RuntimeError("tmux is not installed: the real-terminal tests need it (.ci/run installs it)")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def start(session: str, width: int, height: int, command: str) -> None:
    """`command` in a new detached tmux session of that size. A tmux server started without a terminal (as from
    pytest) puts COLUMNS=80 and LINES=24 in its environment, which would override the pane's real size."""
    tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), f"unset COLUMNS LINES; {command}")


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for(session: str, *texts: str, timeout: float, absent: str | None = None) -> str:
    """The screen once it shows every one of `texts` (and not `absent`), within `scaled(timeout)` seconds. Wait for
    everything a check needs: parts of the screen update a frame apart (the status line before the footer's keys,
    plots on their redraw timer)."""
    end = time.monotonic() + scaled(timeout)
    while time.monotonic() < end:
        shown = screen(session)
        if all(text in shown for text in texts) and (absent is None or absent not in shown):
            return shown
        time.sleep(0.25)
    raise AssertionError(f"{texts!r} never all appeared (or {absent!r} stayed); screen:\n{screen(session)}")


def workbench_command() -> str:
    script = Path(sys.executable).parent / "dsa-workbench"
    return str(script) if script.exists() else f"{sys.executable} -m workbench.cli"


def quit_cleanly(session: str, exit_file: Path) -> None:
    """ctrl+q, then the program must end with exit code 0 (written by the shell to `exit_file`)."""
    tmux("send-keys", "-t", session, "C-q")
    end = time.monotonic() + scaled(30)
    while not exit_file.exists() and time.monotonic() < end:
        time.sleep(0.25)
    assert exit_file.exists(), screen(session)
    assert exit_file.read_text().strip() == "0"


def log_lines(run: Path) -> int:
    log = run / "candidates.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def start_search_until_a_candidate_is_logged(session: str, run: Path) -> None:
    """Once the app is ready: s, then wait until the search runs and has logged its first candidate."""
    wait_for(session, "ready:", timeout=300)
    tmux("send-keys", "-t", session, "s")
    wait_for(session, "search: running", timeout=120)
    end = time.monotonic() + scaled(120)
    while log_lines(run) < 1 and time.monotonic() < end:
        time.sleep(0.1)


def test_pause_step_cycles_stop_quit_in_tmux_beside_a_busy_cpu(tmp_path):
    """The reported lock-up: p during a candidate, then n, on a busy machine. Every cycle must end in
    "search: paused" with Resume offered; then t stops and ctrl+q exits 0."""
    run = tmp_path / "run"
    exit_file = tmp_path / "exit-code"
    command = (f"{workbench_command()} tui --run {run} --seqlen 256 --calib-tokens 1024 --fitness-tokens 512 "
               f"--eval-tokens 512 --device cpu; echo $? > {exit_file}")
    session = f"dsa-e2e-{tmp_path.name}"
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    start(session, 120, 40, command)
    try:
        start_search_until_a_candidate_is_logged(session, run)
        for cycle in range(3):
            tmux("send-keys", "-t", session, "p")
            wait_for(session, "search: paused", "Resume", timeout=30)
            before = log_lines(run)
            tmux("send-keys", "-t", session, "n")
            end = time.monotonic() + scaled(60)
            while log_lines(run) == before and time.monotonic() < end:
                time.sleep(0.1)
            assert log_lines(run) == before + 1, screen(session)
            paused = wait_for(session, "search: paused", "Resume", timeout=30, absent="search: stepping")
            (tmp_path / f"cycle-{cycle}.txt").write_text(paused)
        tmux("send-keys", "-t", session, "t")
        wait_for(session, "search: stopped", "s resumes from the checkpoint", timeout=30)
        quit_cleanly(session, exit_file)
    finally:
        burner.kill()
        tmux("kill-session", "-t", session)
    state = json.loads((run / "state.json").read_text())
    assert state["evaluated"] >= 4
    assert log_lines(run) == state["logged"]


def test_keys_typed_at_full_speed_after_a_stop_land_in_order_beside_two_busy_cpus(tmp_path):
    """Type-ahead: right after a stop, e, ctrl+u and a function in one burst; then F6, Tab, ctrl+u and a folder in
    another, then Enter. Every key lands, in order, where the focus then is: the editor holds the function
    (never an empty box), the export pane exports owl to the typed folder (not a path split over two fields)."""
    run, out = tmp_path / "run", tmp_path / "typed-fast"
    exit_file = tmp_path / "exit-code"
    command = (f"{workbench_command()} tui --run {run} --seqlen 128 --calib-tokens 512 --fitness-tokens 256 "
               f"--eval-tokens 256 --device cpu; echo $? > {exit_file}")
    session = f"dsa-e2e-typed-{tmp_path.name}"
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    start(session, 120, 40, command)
    try:
        start_search_until_a_candidate_is_logged(session, run)
        tmux("send-keys", "-t", session, "t")
        wait_for(session, "search: stopped", timeout=60)
        # one tmux command per burst: the keys reach the terminal back to back
        tmux("send-keys", "-t", session, "e", "C-u", ";", "send-keys", "-t", session, "-l", "abs | var | tanh")
        editor = wait_for(session, "transform:   tanh", "abs | var | tanh", timeout=30, absent="invalid")
        (tmp_path / "editor.txt").write_text(editor)
        tmux("send-keys", "-t", session, "F6", "C-u", ";", "send-keys", "-t", session, "-l", "owl", ";",
             "send-keys", "-t", session, "Tab", "C-u", ";", "send-keys", "-t", session, "-l", str(out), ";",
             "send-keys", "-t", session, "Enter")
        written = wait_for(session, "written:", timeout=300)
        (tmp_path / "export.txt").write_text(written)
        assert str(out) in written, written  # (the line may wrap)
        quit_cleanly(session, exit_file)
    finally:
        for burner in burners:
            burner.kill()
        tmux("kill-session", "-t", session)
    pruning = json.loads((out / "pruning.json").read_text())
    assert pruning["allocation"]["method"] == "owl"


def test_first_minutes_in_a_small_plain_terminal(tmp_path):
    """80x24 without colour: calibration shows its progress in tokens, the importance plot shows the model's
    own per-block importance once calibration ends, and every tab label fits."""
    exit_file = tmp_path / "exit-code"
    command = (f"NO_COLOR=1 {workbench_command()} tui --seqlen 256 --calib-tokens 4096 --eval-tokens 512 "
               f"--device cpu; echo $? > {exit_file}")
    session = f"dsa-e2e-small-{tmp_path.name}"
    start(session, 80, 24, command)
    try:
        progress = wait_for(session, "tokens)", timeout=300)
        assert "calibration" in progress and "of 4,096 tokens" in progress
        ready = wait_for(session, "ready:", "mean score", "outliers", timeout=300)
        (tmp_path / "ready.txt").write_text(ready)
        for label in ("Dashboard F2", "Leaderboard F3", "Editor F4", "Compare F5", "Export F6", "Structured F7"):
            assert label in ready
        quit_cleanly(session, exit_file)
    finally:
        tmux("kill-session", "-t", session)


def test_structured_build_search_export_in_tmux(tmp_path):
    run, out = tmp_path / "srun", tmp_path / "small"
    exit_file = tmp_path / "exit-code"
    command = (f"{workbench_command()} tui --seqlen 256 --calib-tokens 1024 --eval-tokens 512 --device cpu; "
               f"echo $? > {exit_file}")
    session = f"dsa-e2e-s-{tmp_path.name}"
    start(session, 120, 40, command)

    def keys(*names: str) -> None:  # at full speed: one tmux command
        tmux("send-keys", "-t", session, *names)

    def fill(text: str) -> None:  # the focused text box, emptied and typed into at full speed
        tmux("send-keys", "-t", session, "C-u", ";", "send-keys", "-t", session, "-l", text)

    try:
        wait_for(session, "ready:", timeout=300)
        tmux("send-keys", "-t", session, "F7")
        wait_for(session, "Start / resume", timeout=10)
        # from the Start button back through the form: one-shot, lr, stages, offspring, generations, keep, run
        keys("BTab", "BTab", "BTab")
        fill("1:256:256")
        keys("BTab")
        fill("2")
        keys("BTab")
        fill("1")
        keys("BTab", "BTab")
        fill(str(run))
        keys("F7")  # the focus back on Start, where s starts
        keys("s")
        finished = wait_for(session, "structured search: finished", "held-out perplexity", "heads (best)", timeout=400)
        (tmp_path / "structured.txt").write_text(finished)
        keys("F7")  # the focus on Start again
        keys("Tab")  # Start -> export folder
        fill(str(out))
        keys("Tab", "Tab", "Tab")  # fine-tune tokens, replace, Export
        keys("Enter")
        wait_for(session, "exported:", timeout=120)
        quit_cleanly(session, exit_file)
    finally:
        tmux("kill-session", "-t", session)
    final = json.loads((run / "final.json").read_text())
    assert set(final["held_out_perplexity"]) == {"uniform", "searched"}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "dsa_pruned_llama" and len(config["layer_heads"]) == 30
