"""Fault injection for tests: inert unless ``GENPIPE_FAULTS`` is set in the driver's environment.

``GENPIPE_FAULTS='{"train_exit_at_epoch": 2, "sample_exit_on_shard": 1, "marker_dir": "/tmp/f"}'``
makes a training worker (rank 0) or a sampling actor call ``os._exit(137)`` (a hard kill: no
cleanup, no exception) at that point, once: a marker file in ``marker_dir`` stops it from firing
again after Ray restarts the process. The driver reads the variable and forwards it in the task
config, so it reaches processes of an already running cluster.
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV = "GENPIPE_FAULTS"


def from_env() -> dict[str, Any] | None:
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def maybe_exit(faults: dict[str, Any] | None, key: str, value: int) -> None:
    if not faults or faults.get(key) != value or not faults.get("marker_dir"):
        return
    marker = os.path.join(faults["marker_dir"], f"{key}-{value}")
    if os.path.exists(marker):
        return
    os.makedirs(faults["marker_dir"], exist_ok=True)
    open(marker, "w").close()
    os._exit(137)
