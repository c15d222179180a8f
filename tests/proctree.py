"""The process tree below a pid, for tests that must end only what they started."""

from __future__ import annotations

import subprocess


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from one ``ps`` snapshot."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    seen, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen
