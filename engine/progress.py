"""The progress callback every long engine step takes: progress(stage, done, total)."""

from typing import Callable

Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """Default callback: report nothing."""
