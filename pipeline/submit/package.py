"""What a submission ships and runs: the id (job, logical date, spec hash), the working_dir
package and the launcher script that finds the cluster's Python. See :mod:`pipeline.submit`."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from pipeline.spec import JobSpec
from pipeline.submit.client import BAD_INPUT, SubmitError

ENTRY_SCRIPT_NAME = "genpipe_entry.sh"

ENTRY_SCRIPT = r"""#!/bin/sh
# genpipe job launcher: run `python -m pipeline "$@"` with the cluster's own Python.
# Ray runs a job's entrypoint with /bin/sh and the PATH the head was started with, where
# `python` may be another interpreter, without Ray, torch or the project. In order:
#  1. $GENPIPE_PYTHON (set in the cluster's environment, or by `genpipe submit --python`)
#  2. the interpreter of the Ray process that started us (the job supervisor), found from
#     the ray/_raylet*.so it has mapped: <prefix>/lib/pythonX.Y/site-packages/ray/...
#     -> <prefix>/bin/pythonX.Y (Linux /proc; walks up a few parents)
#  3. python3, then python, from PATH
py="${GENPIPE_PYTHON:-}"
pid=$PPID
n=0
while [ -z "$py" ] && [ "$n" -lt 6 ] && [ -n "$pid" ] && [ "$pid" -gt 1 ] && [ -r "/proc/$pid/maps" ]; do
  so=$(grep -m1 -o '/[^ ]*/ray/_raylet[^/ ]*\.so' "/proc/$pid/maps" 2>/dev/null)
  if [ -n "$so" ]; then
    sp=${so%/ray/_raylet*}
    ver=${sp%/*}
    ver=${ver##*/}
    prefix=${sp%/*/*/*}
    for c in "$prefix/bin/$ver" "$prefix/bin/python3" "$prefix/bin/python"; do
      if [ -x "$c" ]; then py=$c; break; fi
    done
    break
  fi
  pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
  n=$((n + 1))
done
if [ -z "$py" ]; then py=$(command -v python3 || command -v python); fi
echo "genpipe: job runs with $py"
exec "$py" -m pipeline "$@"
"""


# ---------------------------------------------------------------------------- ids, paths


def logical_date(date: str | dt.date) -> str:
    if isinstance(date, dt.date):
        return date.isoformat()
    try:
        return dt.date.fromisoformat(str(date)).isoformat()
    except ValueError:
        raise SubmitError(BAD_INPUT, f"--date {date!r}: expected a date like 2026-01-31") from None


def submission_id(spec: JobSpec, date: str | dt.date, attempt: int = 0) -> str:
    """``genpipe-<job>-<YYYY-MM-DD>-<spec hash[:8]>`` (``-r<attempt>`` for a deliberate
    retry): deterministic, and made of characters Ray accepts in ids, URLs and log file
    names ([a-z0-9_-])."""
    sid = f"genpipe-{spec.name}-{logical_date(date)}-{spec.spec_hash()[:8]}"
    return f"{sid}-r{attempt}" if attempt else sid


def cluster_path_problems(spec: JobSpec) -> list[str]:
    """Relative local paths mean nothing on a cluster: the job runs in a temporary copy of
    its working_dir there, and what it writes to a relative path is lost with it."""
    out = []
    for name, url in (
        (f, getattr(getattr(spec, f.rpartition(".")[0]) if "." in f else spec, f.rpartition(".")[2]))
        for f in LOCAL_PATH_FIELDS
    ):
        if url and "://" not in url and not os.path.isabs(url):
            out.append(
                f"{name} {url!r} is a relative path: on a cluster it would land in the job's "
                "temporary working directory. Use an absolute path or a URL (s3://...)"
            )
    return out


LOCAL_PATH_FIELDS = ("storage", "sample.output", "dataset.path", "train.init_from")


def head_is_this_machine(url: str) -> bool:
    """Whether the cluster at ``url`` (dashboard URL) runs on this machine: a loopback host, or
    one whose address this machine can bind (its own interfaces' addresses)."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return False
    for a in addrs:
        ip = ipaddress.ip_address(a.split("%", 1)[0])
        if ip.is_loopback:
            return True
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.bind((a, 0))  # only an address of one of this machine's interfaces binds
            return True
        except OSError:
            continue
    return False


def localize_paths(spec: JobSpec, cwd: str | Path) -> tuple[JobSpec, dict[str, str]]:
    """``spec`` with its relative local paths resolved against ``cwd`` (for a head on this machine,
    where they mean what they mean here), and the fields it changed."""
    changed: dict[str, str] = {}
    update: dict[str, dict[str, str] | str] = {}
    for name in LOCAL_PATH_FIELDS:
        part, _, leaf = name.rpartition(".")
        obj = getattr(spec, part) if part else spec
        url = getattr(obj, leaf)
        if url and "://" not in url and not os.path.isabs(url):
            changed[name] = os.path.normpath(os.path.join(str(cwd), url))
            if part:
                update.setdefault(part, {})[leaf] = changed[name]  # type: ignore[index]
            else:
                update[leaf] = changed[name]
    if not changed:
        return spec, {}
    data = spec.model_dump(mode="python")
    for k, v in update.items():
        if isinstance(v, dict):
            data[k].update(v)
        else:
            data[k] = v
    return JobSpec.model_validate(data), changed


def build_entrypoint(spec_file: str, date: str, extra_args: Sequence[str] = ()) -> str:
    args = ["run", spec_file, "--date", date, *extra_args]
    return " ".join(["sh", ENTRY_SCRIPT_NAME, *map(shlex.quote, args)])


def _stage_package(dest: Path, spec: JobSpec, spec_name: str) -> None:
    """What the cluster gets: ``pipeline/`` (this very package), the validated spec (CLI
    overrides applied) and the launcher. A few hundred kB, far under Ray's upload limit,
    and content-hashed by Ray, so an unchanged project is not uploaded twice."""
    pkg = Path(__file__).resolve().parents[1]  # pipeline/ (this file is pipeline/submit/package.py)
    shutil.copytree(pkg, dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    (dest / spec_name).write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    (dest / ENTRY_SCRIPT_NAME).write_text(ENTRY_SCRIPT)


