"""What the bench scripts write: each record printed as one JSON line as it comes, and the
results file under bench/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDS: list[dict] = []  # every record emitted so far by this process


def emit(**kw: Any) -> dict:
    RECORDS.append(kw)
    print(json.dumps(kw), flush=True)
    return kw


def write_json(out: Path, obj: Any) -> None:
    """``obj`` as an indented JSON file at ``out`` (its folder made if missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {out}")


def write_records(out: Path) -> None:
    """Every record emitted so far, as one JSON file."""
    write_json(out, RECORDS)
