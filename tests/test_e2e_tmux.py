"""End to end in a real terminal: dsa-workbench in tmux on the real default model.

Starts a search, pauses it, opens the editor, types a function, quits with ctrl+q, and checks that
the process ended cleanly and the run folder holds a checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TMUX = shutil.which("tmux")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for(session: str, text: str, timeout: float, absent: str | None = None) -> str:
    """The screen once it shows `text` (and not `absent`)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = screen(session)
        if text in shown and (absent is None or absent not in shown):
            return shown
        time.sleep(0.25)
    raise AssertionError(f"{text!r} never appeared (or {absent!r} stayed); screen:\n{screen(session)}")


def workbench_command() -> str:
    script = Path(sys.executable).parent / "dsa-workbench"
    return str(script) if script.exists() else f"{sys.executable} -m workbench.cli"


def quit_cleanly(session: str, exit_file: Path) -> None:
    """ctrl+q, then the program must end with exit code 0 (written by the shell to `exit_file`)."""
    tmux("send-keys", "-t", session, "C-q")
    end = time.monotonic() + 30
    while not exit_file.exists() and time.monotonic() < end:
        time.sleep(0.25)
    assert exit_file.exists(), screen(session)
    assert exit_file.read_text().strip() == "0"


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_search_pause_edit_quit_in_tmux(tmp_path):
    run = tmp_path / "run"
    exit_file = tmp_path / "exit-code"
    command = (f"{workbench_command()} tui --run {run} --seqlen 256 --calib-tokens 1024 --fitness-tokens 512 "
               f"--eval-tokens 512 --device cpu; echo $? > {exit_file}")
    session = f"dsa-e2e-{tmp_path.name}"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:
        wait_for(session, "ready:", timeout=300)
        tmux("send-keys", "-t", session, "s")
        wait_for(session, "search: running", timeout=60)
        end = time.monotonic() + 120
        while not (run / "state.json").exists() and time.monotonic() < end:
            time.sleep(0.25)
        assert (run / "state.json").exists(), screen(session)
        tmux("send-keys", "-t", session, "p")
        dashboard = wait_for(session, "search: paused", timeout=10)
        (tmp_path / "dashboard.txt").write_text(dashboard)
        tmux("send-keys", "-t", session, "e")
        wait_for(session, "pre-process:", timeout=10)
        tmux("send-keys", "-t", session, "C-u")
        tmux("send-keys", "-t", session, "-l", "abs | var | tanh")
        editor = wait_for(session, "transform:   tanh", timeout=10, absent="invalid")
        (tmp_path / "editor.txt").write_text(editor)
        quit_cleanly(session, exit_file)
    finally:
        tmux("kill-session", "-t", session)
    state = json.loads((run / "state.json").read_text())
    assert state["evaluated"] >= 1
    assert len((run / "candidates.jsonl").read_text().splitlines()) == state["logged"]


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_structured_build_search_export_in_tmux(tmp_path):
    run, out = tmp_path / "srun", tmp_path / "small"
    exit_file = tmp_path / "exit-code"
    command = (f"{workbench_command()} tui --seqlen 256 --calib-tokens 1024 --eval-tokens 512 --device cpu; "
               f"echo $? > {exit_file}")
    session = f"dsa-e2e-s-{tmp_path.name}"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)

    def keys(*names: str) -> None:
        """At a person's pace, one at a time: escape sequences (shift+tab) sent in one burst are misread."""
        for name in names:
            time.sleep(0.3)
            tmux("send-keys", "-t", session, name)

    def fill(text: str) -> None:  # the focused text box
        keys("C-u")
        time.sleep(0.3)
        tmux("send-keys", "-t", session, "-l", text)

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
        finished = wait_for(session, "structured search: finished", timeout=400)
        (tmp_path / "structured.txt").write_text(finished)
        assert "held-out perplexity" in finished and "heads (best)" in finished
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
