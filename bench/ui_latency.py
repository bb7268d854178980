"""Key-to-render latency of the TUI while a real search runs on the default model.

    python bench/ui_latency.py [--presses 40]

Starts the app headless (Textual's Pilot, 120x40) on the real engine, starts a search, waits for the
first candidate, then presses pane keys and measures, per press, the time until the app has handled
the key and refreshed the screen. Prints the median, 95th percentile and worst case in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data_config import DataConfig  # noqa: E402
from screens.settings import SearchParams  # noqa: E402
from workbench.app import AppConfig, make_app  # noqa: E402
from workbench.engine_api import EngineAPI  # noqa: E402


async def measure(presses: int) -> list[float]:
    run = Path(tempfile.mkdtemp()) / "run"
    data = DataConfig(seqlen=256, calib_tokens=4096, fitness_tokens=1024, eval_tokens=1024)
    app = make_app(AppConfig(params=SearchParams(run=str(run), population=8, generations=50)), EngineAPI(data=data))
    latencies = []
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.status_text.startswith("ready"):
            await pilot.pause(0.2)
        await pilot.press("s")
        while not app.query_one("Leaderboard").candidates:
            await pilot.pause(0.2)
        print(f"search running ({app.search_state}); pressing pane keys", flush=True)
        keys = ["l", "d", "c", "d"]
        for i in range(presses):
            start = time.perf_counter()
            await pilot.press(keys[i % len(keys)])
            await pilot.wait_for_scheduled_animations()
            latencies.append((time.perf_counter() - start) * 1000)
            await pilot.pause(0.1)
        scored = len(app.query_one("Leaderboard").candidates)
        await pilot.press("q")
    print(f"{scored} candidates scored during the measurement")
    return latencies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presses", type=int, default=40)
    args = p.parse_args()
    lat = sorted(asyncio.run(measure(args.presses)))
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    print(f"key-to-render latency while searching: median {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms, "
          f"max {lat[-1]:.1f} ms over {len(lat)} presses (target: answered within 100 ms)")


if __name__ == "__main__":
    main()
