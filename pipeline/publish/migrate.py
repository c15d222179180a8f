"""Moving genpipe 0.1 partitions (``<root>/date=D/`` with the shards beside ``manifest.json``,
``.genpipe-run.json`` and ``_report/``) into this layout (:mod:`.layout`); ``genpipe migrate``.

Per old partition, in an order that keeps every reader's view whole: the shards are copied (hard
links on local disk) into ``data/logical_date=D/`` with their bytes unchanged (the ``date``
column, sha256 and footer provenance stay valid), the run state and report into
``_genpipe/logical_date=D/``, then the manifest is written there (after checking every file it
lists arrived with its size), and only then is the old manifest deleted, first, and the old
folder after it. A run still holding the old folder's lease is refused; a date that exists in
both layouts is refused, naming it. The dataset card is written at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.publish.atomic import is_local_fs
from pipeline.publish.layout import MANIFEST_VERSION, LayoutError, parse_shard_name
from pipeline.publish.manifest import parse_manifest_bytes, write_manifest
from pipeline.publish.partition import Partition, old_partitions
from pipeline.publish.storage import join, redact, storage_errors, url_to_fs, with_retries

log = logging.getLogger(__name__)
OLD_MANIFEST, OLD_RUN_STATE, OLD_LEASE, OLD_REPORT, OLD_STAGING = (
    "manifest.json", ".genpipe-run.json", ".genpipe-lease.json", "_report", ".staging")


def migrate(root: str, storage_options: Mapping[str, Any] | None = None,
            say: Callable[[str], None] | None = None) -> list[str]:
    """Move every genpipe 0.1 partition directly under the dataset root ``root`` into this
    layout; returns the dates moved (none if there were none)."""
    so = dict(storage_options or {})
    old = old_partitions(root, so)
    done = []
    for name, d in sorted(old.items()):
        _migrate_one(root, name, Partition.at(root, d, so))
        done.append(d)
        if say:
            say(f"{redact(join(root, name), so)} -> {redact(Partition.at(root, d, so).data_url, so)}")
    if done:
        Partition.at(root, done[-1], so).update_card()
    return done


def _copy(part: Partition, src: str, dst: str) -> None:
    fs = part.fs
    part.guard(dst)
    if is_local_fs(fs):
        os.makedirs(posixpath.dirname(dst), exist_ok=True)
        if os.path.lexists(dst):
            raise LayoutError(f"{dst} exists already: not overwriting it")
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    else:
        with_retries(lambda: fs.copy(src, dst), what=f"copying {posixpath.basename(src)}")


def _migrate_one(root: str, name: str, part: Partition) -> None:
    so = part.storage_options
    src = join(root, name)
    where = redact(src, so)
    with storage_errors(f"migrating {src}", so):
        fs, src_path = url_to_fs(src, so)
        src_path = src_path.rstrip("/")
        if is_local_fs(fs) and os.path.islink(src_path):
            raise LayoutError(f"{where} is a symbolic link: not migrating through it")
        fs.invalidate_cache(src_path)
        entries = {posixpath.basename(e.rstrip("/")): e for e in fs.ls(src_path, detail=False)}
        if OLD_LEASE in entries:
            live = False
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                rec = json.loads(fs.cat_file(entries[OLD_LEASE]))
                live = datetime.fromisoformat(rec["expires_at"]) > datetime.now(UTC)
            if live:
                raise LayoutError(f"{where} is being written by a run of the old genpipe "
                                  "(its lease is live): migrate once it has finished")
        if part.read_manifest() is not None or part.shard_names():
            raise LayoutError(f"{where}: date {part.date} exists in both layouts ({redact(part.data_url, so)} "
                              "too): remove one of them, then migrate")
        raw = fs.cat_file(entries[OLD_MANIFEST]) if OLD_MANIFEST in entries else None
        man = parse_manifest_bytes(raw, where + "/" + OLD_MANIFEST) if raw is not None else None
        for n, path in sorted(entries.items()):
            if parse_shard_name(n):
                _copy(part, path, part.data_file(n))
        if OLD_RUN_STATE in entries:
            _copy(part, entries[OLD_RUN_STATE], part.run_state_path)
        if OLD_REPORT in entries:
            for f in fs.find(entries[OLD_REPORT]):
                _copy(part, f, join(part.report_path, posixpath.relpath(f, entries[OLD_REPORT])))
        if man is not None:
            man.format_version = MANIFEST_VERSION
            write_manifest(part, man)  # checks every listed file arrived with its size
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(entries[OLD_MANIFEST])  # the old view goes first ...
        fs.invalidate_cache(src_path)
        fs.rm(src_path, recursive=True)  # ... then its files
        fs.invalidate_cache(posixpath.dirname(src_path))
    log.info("migrated %s to %s (%s)", where, redact(part.data_url, so), "published" if man else "unpublished")

