"""genpipe's ``TorchTrainer``: Ray's, less two helper processes per ``fit()`` that it does not need.

Every ``fit()`` of Ray Train V2 (2.60) starts, besides its controller and workers, two actor
processes that each import ``ray.train`` (~2 s of CPU each on the 2-core machine, all of it during
the workers' own start-up):

* ``DatasetManager``, made by ``DatasetsCallback`` even when the trainer has no Ray Datasets. A job
  with in-memory data (the default digits job) has none: the callback is left out. A streamed job
  keeps it (its workers read their shards through it).
* ``PlacementGroupCleaner``, a detached watcher of the controller. genpipe's driver does its job
  instead (:mod:`pipeline.train.pg_guard`): the callback is replaced by
  :class:`~pipeline.train.pg_guard.PlacementGroupGuard` and the driver calls
  :func:`~pipeline.train.pg_guard.release` after ``fit()``.

``bench/sampling.py``'s ``train_floor`` times ``fit()`` of an empty loop with this trainer and with
Ray's stock one, in turns. ``_create_default_callbacks`` is a private hook of the Ray pinned in
``pyproject.toml``; ``tests/test_train.py`` checks what it gives."""

from __future__ import annotations

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

from pipeline.train.pg_guard import PlacementGroupGuard


class GenpipeTorchTrainer(TorchTrainer):
    """``TorchTrainer(..., pg_key=...)``: Ray's trainer with the callbacks above changed."""

    def __init__(self, *args, pg_key: str, **kwargs):
        self._pg_key = pg_key
        super().__init__(*args, **kwargs)

    def _create_default_callbacks(self):
        out = []
        for cb in super()._create_default_callbacks():
            if type(cb) is PlacementGroupCleanerCallback:  # Ray's own; a user's subclass (run_config.callbacks) stays
                out.append(PlacementGroupGuard(self._pg_key))
            elif type(cb) is DatasetsCallback and not self.datasets:
                continue
            else:
                out.append(cb)
        return out
