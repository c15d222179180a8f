"""Ray Train's torch backend, without ``import torch`` in Ray Train's controller.

Ray Train's ``TorchConfig`` lives in ``ray.train.torch.config``, which imports torch at its top.
The controller actor unpickles the backend config before it asks for a single worker, so every
training call pays a fresh process's ``import torch`` (1.7-1.8 s on the 2-core CI machine) on its
critical path, in a process that never touches a tensor. :class:`TorchBackendConfig` is the same
backend set up the same way, by Ray's own functions, but they are imported on the workers only,
inside the functions the controller sends them (:func:`_setup_worker`, :func:`_shutdown_worker`,
:class:`_TrainFuncContext`). This module imports no torch, nor does its package's ``__init__``;
``tests/test_train.py`` checks that in a fresh interpreter.

What it does, in the order of ``ray.train.torch.config._TorchBackend`` (Ray 2.60, pinned in
``pyproject.toml``): rank 0's address and a free port; on every worker MASTER_ADDR/MASTER_PORT,
the torchrun variables (LOCAL_RANK, RANK, WORLD_SIZE, ...) and ``init_process_group`` with the given
backend (``env://``; none given: nccl when the workers have GPUs, else gloo, as Ray picks); on
shutdown the process group destroyed (more than one worker) and the CUDA caches emptied, waiting ``TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S`` at most; around the
training function, the worker's CUDA device set as current. Not carried, as genpipe does not use
them: the TPU / HCCL set-ups, ``init_method="tcp"``, and Ray Train V1's worker group (Ray sets the
torchrun variables there only once V1's session exists; :func:`pipeline.train.trainer.train`
refuses to run with ``RAY_TRAIN_V2_ENABLED=0``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig

log = logging.getLogger(__name__)


@dataclass
class TorchBackendConfig(BackendConfig):
    """``ray.train.torch.TorchConfig``'s fields and behaviour for gloo / nccl (see the module)."""

    backend: str | None = None  # None: nccl on GPU workers, else gloo (Ray's rule)
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return _TorchBackend

    @property
    def train_func_context(self):
        return _TrainFuncContext

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict:
        """What Ray Train's run state shows of the backend: TorchConfig's three fields."""
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


def resolve_backend(resources_per_worker: dict) -> str:
    """Ray's choice when no backend is given: nccl for workers with a GPU, else gloo."""
    return "nccl" if resources_per_worker.get("GPU", 0) > 0 else "gloo"


class _TrainFuncContext:
    """Ray's ``TorchConfigContextManager`` (the worker's CUDA device made current), imported on
    the worker when the training function starts."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


def _setup_worker(addr: str, port: int, backend: str, world_rank: int, world_size: int, timeout_s: int) -> None:
    """On a worker: what ``_TorchBackend.on_start`` has each worker do, by Ray's own functions."""
    from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group

    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)
    _set_torch_distributed_env_vars()
    _setup_torch_process_group(backend=backend, world_rank=world_rank, world_size=world_size,
                               init_method="env://", timeout_s=timeout_s)


def _shutdown_worker(destroy_process_group: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


class _TorchBackend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray's: GPU workers of a node see each other's devices

    def on_start(self, worker_group, backend_config: TorchBackendConfig) -> None:
        import ray
        from ray.train._internal.utils import get_address_and_port

        backend = backend_config.backend or resolve_backend(worker_group.get_resources_per_worker())
        addr, port = worker_group.execute_single(0, get_address_and_port)
        n = len(worker_group)
        ray.get([worker_group.execute_single_async(i, _setup_worker, addr=addr, port=port,
                                                   backend=backend, world_rank=i, world_size=n,
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(n)])

    def on_shutdown(self, worker_group, backend_config: TorchBackendConfig) -> None:
        import ray
        from ray._private.ray_constants import env_integer
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import (
            DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
            TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
        )

        futures = worker_group.execute_async(_shutdown_worker, destroy_process_group=len(worker_group) > 1)
        # Ray's reading: a value that is not an integer is logged and the default used, not raised
        # after the shutdown calls went out
        timeout_s = env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        try:
            ray.get(futures, timeout=timeout_s)
        except GetTimeoutError:
            log.warning("torch process group shutdown timed out after %s s", timeout_s)
