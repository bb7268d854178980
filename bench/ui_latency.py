"""Key-to-render latency of the TUI in a real terminal while a search runs on the default model.

    python bench/ui_latency.py [--presses 40]

Runs `dsa-workbench` in tmux (120x40), starts a search, waits for the first scored candidate, then
switches panes with the F-keys. Each latency is the time from `tmux send-keys` until
`tmux capture-pane` shows the new pane's content (polled every 10 ms, so the figure
includes the terminal round trip). Prints the median, 95th percentile and worst case.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a text that only the pane reached by each key shows
MARKERS = {"F3": "gen ", "F2": "Per-block importance", "F5": "held-out perplexity", "F6": "Output folder"}


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def wait_for(session: str, text: str, timeout: float, poll: float = 0.01) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if text in tmux("capture-pane", "-p", "-t", session):
            return time.perf_counter() - start
        time.sleep(poll)
    raise TimeoutError(f"{text!r} did not appear within {timeout} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presses", type=int, default=40)
    args = p.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed")
    run = Path(tempfile.mkdtemp()) / "run"
    exe = Path(sys.executable).parent / "dsa-workbench"
    program = str(exe) if exe.exists() else f"{sys.executable} -m workbench.cli"
    session = "dsa-ui-latency"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40",
         f"{program} tui --run {run} --seqlen 256 --calib-tokens 4096 --fitness-tokens 1024 --eval-tokens 1024")
    try:
        wait_for(session, "ready:", timeout=600, poll=0.5)
        tmux("send-keys", "-t", session, "s")
        wait_for(session, "cand/min", timeout=600, poll=0.2)
        print("search running; switching panes", flush=True)
        keys = ["F3", "F2", "F5", "F2", "F6", "F2"]  # F-keys work whatever has the focus
        latencies, per_key = [], {}
        for i in range(args.presses):
            key = keys[i % len(keys)]
            start = time.perf_counter()
            tmux("send-keys", "-t", session, key)
            wait_for(session, MARKERS[key], timeout=30)
            latencies.append((time.perf_counter() - start) * 1000)
            per_key.setdefault(key, []).append(latencies[-1])
            time.sleep(0.2)
        shown = tmux("capture-pane", "-p", "-t", session)
        tmux("send-keys", "-t", session, "C-q")
    finally:
        time.sleep(2)
        tmux("kill-session", "-t", session)
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    print(shown)
    for key, values in per_key.items():
        print(f"{key} -> {MARKERS[key]!r}: median {statistics.median(values):.1f} ms, max {max(values):.1f} ms; "
              f"in order: {', '.join(f'{v:.0f}' for v in values)}")
    print(f"key-to-render latency while searching: median {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms, "
          f"max {lat[-1]:.1f} ms over {len(lat)} presses (target: answered within 100 ms)")


if __name__ == "__main__":
    main()
