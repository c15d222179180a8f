"""The training run's placement group, released by the driver if Ray Train's controller dies.

Ray Train V2 (2.60) starts a detached ``PlacementGroupCleaner`` actor for every ``fit()``: a
whole Python process that imports ``ray.train`` (~2 s of CPU) only to watch the controller and
remove the worker group's placement group if the controller dies ungracefully (placement groups
are scoped to the job, so one outlives a dead controller for as long as the driver lives). On the
2-core machine that process competes with the controller and the workers for the whole start-up,
and its stop call adds to the shutdown (``bench/sampling.py``'s ``train_floor`` measures both).

genpipe's driver is always there to see the controller die (``fit()`` raises), so it does the
same job without the process: :class:`PlacementGroupGuard`, a worker-group callback run inside
the controller, records each worker group's placement group in the GCS key-value store under a
key of this call, with the controller's actor id; :func:`release`, called by the driver when
``fit()`` returns or raises, removes that placement group if it is still there and its controller
is dead (the controller removes it itself whenever it shuts down normally: then this is a no-op;
a live controller, ``fit()`` interrupted on the driver, keeps it) and deletes the record. If the driver dies too, the job ends
and Ray removes the job's placement groups itself. Ray's cleaner covers the same window: it
registers the group at the same callback.

No torch here: this module is unpickled in Ray Train's controller (see
:mod:`pipeline.train.backend`)."""

from __future__ import annotations

import json
import logging
import uuid

from ray.train.v2._internal.execution.callback import WorkerGroupCallback

log = logging.getLogger("genpipe")
KV_NAMESPACE = "genpipe"


def new_key(run: str) -> str:
    """A key for one ``fit()`` call of the run named ``run``."""
    return f"train-pg:{run}:{uuid.uuid4().hex}"


class PlacementGroupGuard(WorkerGroupCallback):
    """In the controller: each started worker group's placement group id, and the controller's
    own actor id, under ``key``. Never raises: like Ray's cleaner callback, a failure to record
    is logged, not allowed to fail the worker group's start (the group would be orphaned with no
    record to release it by)."""

    def __init__(self, key: str):
        self.key = key

    def after_worker_group_start(self, worker_group) -> None:
        try:
            import ray
            from ray.experimental.internal_kv import _internal_kv_put

            pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
            record = {"pg": pg.id.hex(), "controller": ray.get_runtime_context().get_actor_id()}
            _internal_kv_put(self.key, json.dumps(record).encode(), overwrite=True, namespace=KV_NAMESPACE)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record the training placement group (it is released only when "
                        "Ray Train's controller shuts down or the job ends): %s", exc)


def release(key: str) -> str | None:
    """On the driver, once ``fit()`` has returned or raised: the last placement group recorded
    under ``key`` removed if Ray left it in place because the controller that held it is dead, the
    record deleted. A controller still alive (``fit()`` interrupted on the driver: it shuts its own
    group down, or the job's end does) keeps its group. Returns the removed group's id (hex), None
    when there was nothing to remove. Never raises: it runs in ``fit()``'s ``finally`` and must not
    replace the exception that ended ``fit()``."""
    try:
        return _release(key)
    except Exception as exc:  # noqa: BLE001  (the GCS away, or the connection gone: say so)
        log.warning("could not check the training placement group recorded under %s: %s", key, exc)
        return None


def _release(key: str) -> str | None:
    from ray._private.state import actors
    from ray._raylet import PlacementGroupID
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    raw = _internal_kv_get(key, namespace=KV_NAMESPACE)
    if raw is None:
        return None  # no worker group was started
    _internal_kv_del(key, namespace=KV_NAMESPACE)
    record = json.loads(raw)
    if actors(record["controller"]).get("State", "DEAD") != "DEAD":
        return None  # alive (or restarting): the group is still the controller's to shut down
    pg = PlacementGroup(PlacementGroupID(bytes.fromhex(record["pg"])))
    if placement_group_table(pg).get("state") in (None, "REMOVED"):
        return None  # the controller shut its worker group down, as it does on success and on failure
    try:
        remove_placement_group(pg)
    except Exception as exc:  # noqa: BLE001  (already gone meanwhile)
        log.warning("could not remove training placement group %s left by Ray Train's controller: %s",
                    pg.id.hex(), exc)
        return None
    return pg.id.hex()
