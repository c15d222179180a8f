"""What the bench scripts write: each record printed as one JSON line as it comes, and the
results file under bench/results/."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RECORDS: list[dict] = []  # every record emitted so far by this process


def emit(**kw: Any) -> dict:
    RECORDS.append(kw)
    print(json.dumps(kw), flush=True)
    return kw


def load_avg() -> list[float]:
    """The machine's 1/5/15-minute load averages, rounded: beside every figure, how busy it was."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows (e.g. ``x86_64``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What a results file says of the CPU machine it ran on (``load_avg_after`` is the caller's)."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_before": load_avg()}


def write_json(out: Path, obj: Any) -> None:
    """``obj`` as an indented JSON file at ``out`` (its folder made if missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {out}")


def write_records(out: Path) -> None:
    """Every record emitted so far, as one JSON file."""
    write_json(out, RECORDS)
