"""The run folder of a search: settings, an append-only candidate log, an atomic checkpoint.

    run.json          format marker and the search settings (written once)
    candidates.jsonl  one line per evaluated candidate, scored or rejected with its reason
    state.json        checkpoint: generation, queue, population, best, RNG state (atomic replace)
    best.txt          text form of the best function so far
    final.json        held-out re-scoring once the search has finished
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from engine.errors import WorkbenchError
from engine.search.events import Candidate

RUN_FORMAT = "dsa-workbench/search-run"
RUN_VERSION = 1


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    def __init__(self, folder: str | Path, run_format: str = RUN_FORMAT):
        self.folder = Path(folder).expanduser()
        self.run_format = run_format

    @property
    def exists(self) -> bool:
        return (self.folder / "run.json").exists()

    def create(self, settings: dict, into_existing: bool = False) -> None:
        """Start a run; `into_existing`: the folder may hold other files (a structured run's database)."""
        if self.exists:
            raise WorkbenchError(f"run folder {self.folder} already holds a search: resume it (--resume) "
                                 "or choose another folder")
        if not into_existing and self.folder.exists() and any(self.folder.iterdir()):
            raise WorkbenchError(f"run folder {self.folder} exists and is not empty")
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "run.json",
                     json.dumps({"format": self.run_format, "version": RUN_VERSION, "settings": settings}, indent=2))
        (self.folder / "candidates.jsonl").touch()

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
        if not isinstance(state, dict) or "generation" not in state or "queue" not in state:
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
