"""Where the evaluation's classifiers are trained: one after the other, or side by side as Ray tasks.

An evaluation trains several independent things: the FID feature net (when not cached), the
real-only probe ensembles (when not cached), the CAS ensemble and one ensemble per uplift
protocol. Each is a pure function of its arguments (every probe member draws from its own
seeded generator, :mod:`pipeline.evaluate.probe`), so where it runs changes no figure: on the
2-core machine, one after the other they were ~115 s of a ~350 s default job, side by side on
both cores about half that. :func:`pipeline.evaluate.gate.evaluate_quality` submits them all
first and gathers the results after.

* :class:`Serial` runs each call when it is submitted (tests, notebooks, a GPU evaluation: one
  device, and fast there).
* :class:`RayTasks` runs each call as a one-CPU, one-thread Ray task. Arrays are put in the
  object store once per submitting evaluation, however many tasks share them. Called from
  inside a Ray task, that task's own CPU is lent back to Ray while it waits for the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class Pending(Protocol):
    def result(self) -> Any: ...

    @property
    def seconds(self) -> float: ...


class Executor(Protocol):
    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending: ...


class _Done:
    def __init__(self, value: Any, seconds: float):
        self._value, self._seconds = value, seconds

    def result(self) -> Any:
        return self._value

    @property
    def seconds(self) -> float:
        return self._seconds


class Serial:
    """Run each call at once, in this process."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        return _Done(value, time.perf_counter() - t)


SERIAL = Serial()


def _timed_call(fn: Callable[..., Any], threads: int, kw_names: tuple[str, ...], *values: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` on ``threads`` intra-op threads, and its seconds. The args and the
    kwargs' values arrive as top-level task arguments, so Ray resolves the object refs among them."""
    import torch

    torch.set_num_threads(threads)
    split = len(values) - len(kw_names)
    t = time.perf_counter()
    value = fn(*values[:split], **dict(zip(kw_names, values[split:], strict=True)))
    return value, time.perf_counter() - t


class _RayPending:
    def __init__(self, ref: Any):
        self._ref, self._got = ref, None

    def result(self) -> Any:
        import ray

        if self._got is None:
            self._got = ray.get(self._ref)
        return self._got[0]

    @property
    def seconds(self) -> float:
        self.result()
        return float(self._got[1])


class RayTasks:
    """Run each call as a Ray task with ``num_cpus`` CPUs and as many intra-op threads.

    One thread per task, several tasks at once: on the 2-core machine two intra-op threads made
    the batched probes ~10x slower whenever anything else ran, while two one-thread tasks use
    both cores without contending.
    """

    #: arrays smaller than this travel inline with the task
    PUT_BYTES = 1 << 20

    def __init__(self, num_cpus: float = 1.0, threads: int = 1):
        import ray

        self._remote = ray.remote(_timed_call).options(num_cpus=num_cpus, max_retries=1)
        self._threads = max(1, int(threads))
        self._refs: dict[int, tuple[np.ndarray, Any]] = {}

    def _ref(self, value: Any) -> Any:
        if not isinstance(value, np.ndarray) or value.nbytes < self.PUT_BYTES:
            return value
        import ray

        hit = self._refs.get(id(value))
        if hit is None or hit[0] is not value:  # the array is kept alive here, so its id is not reused
            hit = (value, ray.put(value))
            self._refs[id(value)] = hit
        return hit[1]

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Pending:
        values = [self._ref(a) for a in args] + [self._ref(v) for v in kwargs.values()]
        return _RayPending(self._remote.remote(fn, self._threads, tuple(kwargs), *values))
