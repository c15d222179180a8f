"""Progress for long work: a rich bar on a terminal, plain log lines otherwise.

Training runs in Ray Train workers, so rank 0 posts its epoch to a tiny ``ProgressBoard``
actor (no CPU reserved) and the driver polls it; sampling progress comes straight from
finished shards in the driver.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray

log = logging.getLogger("genpipe")
T = TypeVar("T")


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self) -> None:
        self.state: dict[str, tuple[int, int, dict[str, Any]]] = {}

    def update(self, stage: str, done: int, total: int, info: dict[str, Any] | None = None) -> None:
        self.state[stage] = (done, total, info or {})

    def get(self, stage: str) -> tuple[int, int, dict[str, Any]] | None:
        return self.state.get(stage)


class Reporter:
    """One progress display for a whole job: ``with Reporter() as r: t = r.task(...)``."""

    def __init__(self, interactive: bool | None = None, min_log_interval: float = 5.0):
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.min_log_interval = min_log_interval
        self._progress = None

    def __enter__(self) -> Reporter:
        if self.interactive:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            # on stderr, like the log lines: stdout carries results only (`--json` documents)
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
                                      console=Console(stderr=True))
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        else:
            log.info(text)

    def task(self, name: str, total: int, unit: str = "") -> Task:
        return Task(self, name, total, unit)


class Task:
    def __init__(self, rep: Reporter, name: str, total: int, unit: str):
        self.rep, self.name, self.total, self.unit = rep, name, total, unit
        self.done = 0
        self._last_log = 0.0
        self._id = rep._progress.add_task(name, total=total, info="") if rep._progress is not None else None

    def update(self, done: int, info: str = "") -> None:
        self.done = done
        if self._id is not None:
            self.rep._progress.update(self._id, completed=done, info=info)
            return
        now = time.monotonic()
        if done >= self.total or now - self._last_log >= self.rep.min_log_interval:
            self._last_log = now
            log.info("%s: %d/%d %s %s", self.name, done, self.total, self.unit, info)

    def advance(self, n: int, info: str = "") -> None:
        self.update(self.done + n, info)


def watch(board: Any, stage: str, task: Task, fn: Callable[[], T], fmt: Callable[[dict], str] = str) -> T:
    """Run ``fn`` (blocking) while mirroring ``board``'s ``stage`` into ``task``."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    seen = -1
    while th.is_alive():
        th.join(timeout=0.5)
        try:
            cur = ray.get(board.get.remote(stage), timeout=5)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            continue
        if cur is not None and cur[0] != seen:
            seen = cur[0]
            task.update(cur[0], fmt(cur[2]))
    if "error" in out:
        raise out["error"]
    return out["value"]
