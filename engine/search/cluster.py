"""Candidates scored by Ray actors: every GPU of this box (`local`) or of a cluster (`ray://head:10001`).

Each actor (a `Worker`) loads the model and builds its caches once, then scores one candidate at a time.
The driver keeps the run folder, the log and the checkpoints: a chunk of candidates goes out, one per
idle actor, and the results come back in candidate order, so a parallel run logs exactly what a
single-device run logs. An actor that dies with a candidate in flight (killed, out of memory, its node
lost) has that candidate retried on another actor and is replaced when the cluster has room; nothing
is scored twice in the log. Stopping the search stops waiting at once; `close` ends the actors.

Needs the `cluster` extra (`pip install 'dsa-workbench[cluster]'`).
"""

from __future__ import annotations

import faulthandler
import logging
import socket
import sys
from typing import Callable

from engine.errors import WorkbenchError
from engine.progress import Progress, no_progress
from engine.search.core import Outcome, describe
from engine.search.events import WorkersChanged

_connected: dict[str, str] = {}  # the address this process's Ray is connected to
POLL_S = 0.05
CONNECT_S = 10.0
MAX_RETRIES = 3  # a candidate whose actor died this often is rejected (it may be what kills them)


def connect(address: str, workers: int | None, cpus_per_worker: int | None = None) -> tuple[object, int, bool]:
    """(ray module, number of workers, whether they get a GPU each) for `address` ("local" or a Ray
    address); one line when Ray is missing or the cluster cannot be reached. The CLI calls it first on its
    main thread (where Ray installs its signal handlers), the TUI in a search's thread (Ray does without them
    there); later calls reuse the connection."""
    try:
        import ray
    except ImportError as exc:
        raise WorkbenchError("--cluster needs Ray: pip install 'dsa-workbench[cluster]'") from exc
    if address not in ("local", "auto"):
        _reachable(address)
    if ray.is_initialized() and (_connected.get("address") != address or address == "local" and workers and
                                 ray.cluster_resources().get("CPU", 0) < workers * (cpus_per_worker or 1)):
        ray.shutdown()  # connected elsewhere, or too small, for an earlier search of this process: start again
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        # as Ray's driver does, but on the process's own stderr: under the TUI sys.stderr is Textual's capture,
        # which has no file descriptor, and ray.init fails on it
        faulthandler.enable(sys.__stderr__)
    try:
        if not ray.is_initialized():
            quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
            if address == "local":
                # the workers are the search's work: at Ray's default niceness (15) any other busy process on
                # the box starves them (beside two busy CPUs they ran at 3% of a core)
                ray.init(include_dashboard=False, _system_config={"worker_niceness": 0}, **quiet,
                         **({"num_cpus": workers * (cpus_per_worker or 1)} if workers else {}))
            else:
                ray.init(address=address, **quiet)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds (ConnectionError, RuntimeError, gRPC errors)
        raise WorkbenchError(f"cannot reach the Ray cluster at {address}: {describe(exc)}") from exc
    _connected["address"] = address
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = workers or gpus or 1
    if gpus and count > gpus:
        raise WorkbenchError(f"--workers {count}: the cluster has {gpus} GPUs (one worker each)")
    return ray, count, gpus > 0


def _reachable(address: str) -> None:
    """A cluster's head must answer on its port within CONNECT_S (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "localhost", int(port)), timeout=CONNECT_S).close()
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from exc


class Worker:
    """An actor's state: a model and what scores candidates on it (`make()` builds it, in the actor)."""

    def __init__(self, make: Callable[[], object]):
        import torch

        if not torch.cuda.is_available():  # a CPU actor: as many threads as cores Ray gave it
            import ray

            torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.scorer = make()

    def prepare(self) -> bool:
        self.scorer.prepare(no_progress)
        return True

    def score(self, text: str, stage: int = 0) -> Outcome:
        return self.scorer.score_outcome(text, stage)

    def ratios(self, texts: list[str]) -> list:
        return self.scorer.ratios(texts)

    def unit_params(self, granularity: str) -> list[int]:
        return self.scorer.unit_params(granularity)

    def profiles(self, texts: list[str], granularity: str) -> list:
        return self.scorer.profiles(texts, granularity)

    def distilled(self, methods: list[str]) -> list[str]:
        return self.scorer.distilled(methods)

    def held_out(self, methods, *corpus):
        """The scorer's held-out perplexities (a DSA scorer also takes the corpus to score them on)."""
        return self.scorer.held_out(methods, no_progress, *corpus)

    def zero_shot(self, *args):
        return self.scorer.zero_shot(*args, no_progress)


class ClusterEvaluator:
    """The evaluator of a search, its candidates scored by `workers` Ray actors."""

    def __init__(self, address: str, make: Callable[[], object], workers: int | None = None,
                 cpus_per_worker: int | None = None, report: Callable[[object], None] = lambda e: None):
        self.ray, self.workers, self.gpu = connect(address, workers, cpus_per_worker)
        self.make = make
        self.report = report
        self.cpus = cpus_per_worker or 1
        self.failed = 0
        self._remote = self.ray.remote(Worker)
        self._actors = [self._start() for _ in range(self.workers)]
        self._ready: list = []
        self._joining: dict = {}  # prepare() ref -> replacement actor still loading

    @property
    def actors(self) -> list:
        """The workers ready to score candidates."""
        return list(self._ready)

    def _start(self):
        options = {"num_gpus": 1} if self.gpu else {"num_cpus": self.cpus}
        return self._remote.options(**options, max_restarts=0).remote(self.make)

    def prepare(self, progress: Progress = no_progress) -> None:
        """Every actor loads the model and builds its caches; `progress` counts the actors ready."""
        pending = {actor.prepare.remote(): actor for actor in self._actors}
        done = 0
        try:
            while pending:
                ready, _ = self.ray.wait(list(pending), timeout=POLL_S)
                for ref in ready:
                    pending.pop(ref)
                    try:
                        self.ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a worker that cannot even start: a failed start
                        raise WorkbenchError(f"a Ray worker could not load the model: {describe(exc)}") from exc
                    done += 1
                progress("workers ready", done, len(self._actors))  # may raise: stopped while preparing
        except BaseException:
            self.close()
            raise
        self._ready = list(self._actors)
        self._announce(0)

    def evaluate(self, texts: list[str], check: Progress, stage: int = 0) -> list[Outcome]:
        """One outcome per text, in order; each text on an idle actor, retried on another if its actor died."""
        results: dict[int, Outcome] = {}
        waiting = list(range(len(texts)))  # indices not yet sent
        tries = {i: 0 for i in waiting}
        running: dict = {}  # ref -> (index, actor)
        idle = [actor for actor in self._ready]
        while len(results) < len(texts):
            while waiting and idle:
                i, actor = waiting.pop(0), idle.pop(0)
                running[actor.score.remote(texts[i], stage)] = (i, actor)
            self._announce(len(running))
            if not running and not self._joining:
                raise WorkbenchError("every Ray worker has died: nothing left to score candidates")
            ready, _ = self.ray.wait(list(running) + list(self._joining), timeout=POLL_S)
            for ref in ready:
                if ref in self._joining:
                    self._joined(ref, idle)
                    continue
                i, actor = running.pop(ref)
                try:
                    results[i] = self.ray.get(ref)
                    idle.append(actor)
                except self.ray.exceptions.RayActorError as exc:
                    self._lost(actor)
                    tries[i] += 1
                    if tries[i] >= MAX_RETRIES:
                        results[i] = Outcome(None, (), 0.0, f"its Ray worker died {tries[i]} times: {describe(exc)}",
                                             error=True)
                    else:
                        waiting.insert(0, i)
            check()
        self._announce(0)
        return [results[i] for i in range(len(texts))]

    def held_out(self, methods, check: Progress, corpus: str | None = None):
        """The final re-scoring, on one actor."""
        return self._on_one("held_out", methods, *([corpus] if corpus else []))

    def zero_shot(self, methods, tasks, limit, check: Progress):
        """Zero-shot accuracy of the final methods, on one actor."""
        return self._on_one("zero_shot", methods, tasks, limit)

    def ratios(self, texts: list[str]) -> list:
        """Block ratios without scoring (cheap), on one actor."""
        return self._on_one("ratios", texts)

    def unit_params(self, granularity: str) -> list[int]:
        return self._on_one("unit_params", granularity)

    def profiles(self, texts: list[str], granularity: str) -> list:
        """Allocations as profiles (cheap), on one actor."""
        return self._on_one("profiles", texts, granularity)

    def distilled(self, methods: list[str]) -> list[str]:
        """The functions nearest the methods' ratios, on one actor."""
        return self._on_one("distilled", methods)

    def _on_one(self, method: str, *args):
        """A call on the first worker that answers (a dead one is replaced, as in `evaluate`)."""
        while self._ready:
            actor = self._ready[0]
            try:
                return self.ray.get(getattr(actor, method).remote(*args))
            except self.ray.exceptions.RayActorError:
                self._lost(actor)
        raise WorkbenchError("every Ray worker has died: nothing left to score candidates")

    def _lost(self, actor) -> None:
        """A dead actor leaves; a replacement starts loading the model and joins once ready."""
        self.failed += 1
        self._ready.remove(actor)
        replacement = self._start()
        self._joining[replacement.prepare.remote()] = replacement

    def _joined(self, ref, idle: list) -> None:
        replacement = self._joining.pop(ref)
        try:
            self.ray.get(ref)
        except Exception:  # noqa: BLE001 - no room on the cluster, or no luck: carry on with fewer workers
            return
        self._ready.append(replacement)
        idle.append(replacement)

    def _announce(self, busy: int) -> None:
        self.report(WorkersChanged(len(self._ready), busy, self.failed, len(self._joining)))

    def close(self) -> None:
        for actor in self._actors + self._ready + list(self._joining.values()):
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._ready = []
