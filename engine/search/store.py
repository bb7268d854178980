"""The run folder of a search: settings, an append-only candidate log, an atomic checkpoint.

    run.json          format marker and the search settings (written once, last: it marks the run)
    candidates.jsonl  one line per evaluated candidate, scored or rejected with its reason
    state.json        checkpoint: generation, queue, population, best, RNG state (atomic replace)
    best.txt          text form of the best function so far
    final.json        held-out re-scoring once the search has finished

A folder is a run once run.json exists; it is written after the first checkpoint, so a start that
failed or was killed leaves at most files that the next start replaces.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from engine.choices import SEARCH_RUN_FORMAT
from engine.errors import WorkbenchError
from engine.saving import write_atomic
from engine.search.events import Candidate

RUN_VERSION = 1
RUN_FILES = ("state.json", "candidates.jsonl", "best.txt", "final.json")
STATE_KEYS = {"queue", "evaluated", "logged", "done", "best"}


class RunStore:
    def __init__(self, folder: str | Path, run_format: str = SEARCH_RUN_FORMAT, shared: bool = False):
        """`shared`: the folder holds other files too (a structured run's database)."""
        self.folder = Path(folder).expanduser()
        self.run_format = run_format
        self.shared = shared

    @property
    def exists(self) -> bool:
        return (self.folder / "run.json").exists()

    def check_new(self) -> None:
        """Refuse a folder that holds a search, or (unless shared) anything but the leftovers of a start
        that never completed. Called before any work, so a bad folder costs nothing."""
        if self.exists:
            raise WorkbenchError(f"run folder {self.folder} already holds a search: resume it (--resume) "
                                 "or choose another folder")
        if self.folder.exists() and not self.folder.is_dir():
            raise WorkbenchError(f"run folder {self.folder} is a file")
        if not self.shared and self.folder.exists():
            foreign = [p.name for p in self.folder.iterdir() if not _leftover(p.name)]
            if foreign:
                raise WorkbenchError(f"run folder {self.folder} exists and is not empty ({foreign[0]})")

    def create(self, settings: dict, state: dict) -> None:
        """Start a run with its initial checkpoint; run.json, written last, makes it one."""
        self.check_new()
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("best.txt", "final.json"):
            (self.folder / name).unlink(missing_ok=True)
        write_atomic(self.folder / "candidates.jsonl", "")
        self.save_state(state, None)
        write_atomic(self.folder / "run.json",
                     json.dumps({"format": self.run_format, "version": RUN_VERSION, "settings": settings}, indent=2))

    def settings(self) -> dict:
        meta = self._read_json("run.json", required=True)
        if not isinstance(meta, dict) or meta.get("format") != self.run_format:
            raise WorkbenchError(f"{self.folder} is not a dsa-workbench search run (run.json has no search format)")
        if meta.get("version") != RUN_VERSION:
            raise WorkbenchError(f"{self.folder}: run format version {meta.get('version')} is not supported")
        return meta["settings"]

    def load_state(self, repair: bool = True) -> dict | None:
        """The checkpoint; `repair` (when resuming) drops log lines written after it. Readers that may
        run beside a live search (exports) pass repair=False."""
        state = self._read_json("state.json", required=False)
        if state is None:
            return None
        if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
            raise WorkbenchError(f"run folder {self.folder} is corrupt: state.json lacks the search state")
        if repair:
            self._truncate_log(state["logged"])
        return state

    def save_state(self, state: dict, best: Candidate | None) -> None:
        write_atomic(self.folder / "state.json", json.dumps(state))
        if best is not None:
            write_atomic(self.folder / "best.txt", best.text + "\n")

    def append(self, candidate: Candidate) -> None:
        with open(self.folder / "candidates.jsonl", "a") as fh:
            fh.write(json.dumps(asdict(candidate)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def candidates(self) -> list[Candidate]:
        out = []
        path = self.folder / "candidates.jsonl"
        if not path.exists():
            return out
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            try:
                row = json.loads(line)
                out.append(Candidate.from_json(row))
            except (json.JSONDecodeError, TypeError) as exc:
                raise WorkbenchError(f"run folder {self.folder} is corrupt: candidates.jsonl line {lineno}") from exc
        return out

    def write_final(self, final: dict) -> None:
        write_atomic(self.folder / "final.json", json.dumps(final, indent=2))

    def final(self) -> dict | None:
        return self._read_json("final.json", required=False)

    def _truncate_log(self, lines: int) -> None:
        """Drop log lines written after the last checkpoint (a kill between the two writes)."""
        path = self.folder / "candidates.jsonl"
        data = path.read_bytes() if path.exists() else b""
        keep = data.split(b"\n")[:lines]
        if len(keep) < lines or (lines and not keep[-1]):
            raise WorkbenchError(f"run folder {self.folder} is corrupt: candidates.jsonl has fewer lines than the "
                                 f"{lines} its checkpoint counts")
        wanted = b"".join(line + b"\n" for line in keep)
        if data != wanted:
            write_atomic(path, wanted.decode())

    def _read_json(self, name: str, required: bool):
        path = self.folder / name
        if not path.exists():
            if required:
                if not self.folder.exists():
                    raise WorkbenchError(f"no such run folder: {self.folder}")
                raise WorkbenchError(f"{self.folder} is not a dsa-workbench search run (no {name})")
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkbenchError(f"run folder {self.folder} is corrupt: {name} is not valid JSON") from exc


def _leftover(name: str) -> bool:
    """A file of a start that never completed, or a temporary file of an interrupted atomic write."""
    return name in RUN_FILES or any(name.startswith(f".{f}.") for f in RUN_FILES + ("run.json",))
