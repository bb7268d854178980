"""Terminal output for headless commands: progress bars and status lines on stderr, results on stdout."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from tqdm import tqdm


def print_result(args, result: dict, text: str) -> None:
    """The command's result: `text` for people, or with --json the `result` for scripts."""
    if args.json:
        print(json.dumps(result, indent=2, default=_jsonable))
    else:
        print(text)


def _jsonable(obj):
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def zero_shot_lines(scores: dict, label: str = "") -> list[str]:
    """One line per task of a zero-shot result (engine.zeroshot.TaskScore as JSON)."""
    lines = []
    for name, score in scores.items():
        if score["error"] is not None:
            lines.append(f"zero-shot {name}{label}: failed: {score['error']}")
            continue
        norm = "" if score["normalized"] is None else f", acc_norm {100 * score['normalized']:.1f}%"
        lines.append(f"zero-shot {name}{label}: acc {100 * score['accuracy']:.1f}%{norm} "
                     f"({score['samples']} examples, {score['seconds']:.1f} s)")
    return lines


class ProgressBars:
    """A `progress(stage, done, total)` callback drawing one tqdm bar per stage on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            unit = "tok" if stage == "calibration" else "it"  # calibration counts tokens
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr, leave=False, dynamic_ncols=True, unit=unit,
                             unit_scale=unit == "tok")
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._stage = None

    def status(self, message: str) -> None:
        if self.enabled:
            self.close()
            print(message, file=sys.stderr, flush=True)
