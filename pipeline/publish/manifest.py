"""``manifest.json``: written last, it is what makes a partition published; plus the
resume / overwrite / retention helpers that look at a partition as a whole."""

from __future__ import annotations

import json
import logging
import math
import posixpath
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pipeline.publish.atomic import STAGING_DIR, put_replace, remove_empty_dir
from pipeline.publish.layout import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SHARD_RE,
    ManifestError,
    ShardInfo,
    parse_shard_name,
)
from pipeline.publish.layout import partition_fs as _fs
from pipeline.publish.provenance import Provenance, metadata_of_file
from pipeline.publish.schema import check_date
from pipeline.publish.storage import join, redact, redact_obj, safe_join, storage_errors, with_retries

log = logging.getLogger(__name__)


def _jsonable(v: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None, unknown objects to str."""
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            return str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def _check_shards(shards: Sequence[ShardInfo], num_images: int) -> tuple[list[ShardInfo], int]:
    if not shards:
        raise ManifestError("no shards to publish")
    ordered = sorted(shards, key=lambda s: s.index)
    parsed = [parse_shard_name(s.path) for s in ordered]
    if any(p is None for p in parsed):
        raise ManifestError(f"not shard file names: {[s.path for s, p in zip(ordered, parsed, strict=True) if not p]}")
    counts = {p[1] for p in parsed if p}
    if len(counts) != 1:
        raise ManifestError(f"shards of different plans (of-N values {sorted(counts)})")
    n = counts.pop()
    if [p[0] for p in parsed if p] != list(range(n)) or [s.index for s in ordered] != list(range(n)):
        raise ManifestError(f"shards must be exactly 0..{n - 1}, got indices {[s.index for s in ordered][:20]}")
    total = sum(s.rows for s in ordered)
    if total != num_images:
        raise ManifestError(f"shards hold {total} rows, expected {num_images}")
    return ordered, n


def write_manifest(
    partition: str,
    shards: Sequence[ShardInfo],
    *,
    spec_hash: str,
    code_version: str,
    job: str,
    date: str,
    num_images: int,
    class_names: Sequence[str],
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    provenance: Provenance | None = None,
) -> dict[str, Any]:
    """Publish the partition: check the shards are all there, then write ``manifest.json`` atomically.

    Given ``provenance`` (the run's spec hash and checkpoint digest; its spec hash must be
    ``spec_hash``), the footer of every listed shard must name it: a manifest is never
    committed over shard files its run did not write.

    ``extra`` keys are merged at the top level (they may not shadow the standard keys). Every
    string is redacted, so no credential can end up in the manifest. Returns the manifest as
    written.
    """
    check_date(date)
    ordered, n = _check_shards(shards, num_images)
    if provenance is not None and provenance.spec_hash != spec_hash:
        raise ManifestError("the shards' provenance names another spec hash than the manifest's")
    names = [str(c) for c in class_names]
    man: dict[str, Any] = {
        "format_version": MANIFEST_VERSION,
        "job": job,
        "date": date,
        "num_rows": sum(s.rows for s in ordered),
        "num_images": num_images,
        "num_shards": n,
        "class_names": names,
        "spec_hash": spec_hash,
        "code_version": code_version,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [s.to_json() for s in ordered],
        "metrics": dict(metrics) if metrics is not None else None,
    }
    if all(s.label_counts for s in ordered):
        totals: dict[int, int] = {}
        for s in ordered:
            for k, c in s.label_counts.items():
                totals[int(k)] = totals.get(int(k), 0) + int(c)
        man["label_counts"] = {(names[k] if 0 <= k < len(names) else str(k)): c for k, c in sorted(totals.items())}
    for k, v in (extra or {}).items():
        if k in man:
            raise ValueError(f"extra key {k!r} would shadow a standard manifest key")
        man[k] = v
    man = redact_obj(_jsonable(man), storage_options or {})
    data = json.dumps(man, indent=1, allow_nan=False).encode()
    url = join(partition, MANIFEST_NAME)
    with storage_errors(f"writing {url}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        _check_present(fs, ppath, ordered)
        if provenance is not None:
            _check_provenance(fs, ppath, ordered, n, provenance)
        staging = join(ppath, STAGING_DIR)
        with_retries(lambda: put_replace(fs, join(ppath, MANIFEST_NAME), data, staging), what="writing the manifest")
        remove_empty_dir(fs, staging)
    log.debug("published %s: %d rows in %d shards", redact(partition, storage_options or {}), man["num_rows"], n)
    return json.loads(data)


def _check_present(fs: Any, ppath: str, shards: Sequence[ShardInfo]) -> None:
    """Every shard file is in storage with its recorded size (one listing)."""
    fs.invalidate_cache(ppath)
    listing = with_retries(lambda: fs.ls(ppath, detail=True), what="listing the partition")
    sizes = {posixpath.basename(e["name"].rstrip("/")): e.get("size") for e in listing}
    bad = [s.path for s in shards if sizes.get(s.path) != s.bytes]
    if bad:
        raise ManifestError(f"shards missing or changed since they were written: {bad[:10]}; not publishing")


def _check_provenance(fs: Any, ppath: str, shards: Sequence[ShardInfo], n: int, prov: Provenance,
                      threads: int = 16) -> None:
    """Every shard's footer names this run's spec hash and checkpoint digest (footers only)."""

    def check(s: ShardInfo) -> str | None:
        meta = with_retries(lambda: metadata_of_file(fs, join(ppath, s.path)), what=f"reading {s.path}'s footer")
        problem = prov.problem(meta, s.index, n)
        return f"{s.path}: {problem}" if problem else None

    with ThreadPoolExecutor(max(1, min(threads, len(shards)))) as ex:
        bad = [p for p in ex.map(check, shards) if p]
    if bad:
        raise ManifestError(f"{len(bad)} shard(s) were not written by this run, not publishing: {'; '.join(bad[:3])}")


def unpublish(partition: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Delete the partition's ``manifest.json`` only (before its files are replaced, so no
    manifest ever lists files that changed); False if there was none."""
    with storage_errors(f"unpublishing {partition}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        path = join(ppath, MANIFEST_NAME)
        try:
            with_retries(lambda: fs.rm_file(path), what="removing the manifest")
        except FileNotFoundError:
            return False
        fs.invalidate_cache(path)
    return True


def read_manifest(partition: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The partition's manifest, or None if it has none (not published). ManifestError if unreadable."""
    url = join(partition, MANIFEST_NAME)
    with storage_errors(f"reading {url}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        path = join(ppath, MANIFEST_NAME)
        fs.invalidate_cache(path)
        try:
            raw = with_retries(lambda: fs.cat_file(path), what="reading the manifest")
        except FileNotFoundError:
            return None
    try:
        man = json.loads(raw)
    except ValueError:
        raise ManifestError(f"{redact(url, storage_options or {})}: not valid JSON") from None
    if not isinstance(man, dict) or not isinstance(man.get("files"), list):
        raise ManifestError(f"{redact(url, storage_options or {})}: not a genpipe manifest (no 'files' list)")
    for f in man["files"]:
        safe_join(partition, f["path"] if isinstance(f, dict) else f)  # refuse paths that escape
    return man


def existing_state(
    partition: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest or None, sorted shard file names present) of a partition, for resume/overwrite."""
    man = read_manifest(partition, storage_options)
    return man, list_shards(partition, storage_options)


def list_shards(partition: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Sorted names of the shard files directly in the partition (none if it does not exist)."""
    with storage_errors(f"listing {partition}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        fs.invalidate_cache(ppath)
        try:
            names = with_retries(lambda: fs.ls(ppath, detail=False), what="listing the partition")
        except FileNotFoundError:
            return []
    return sorted(b for b in (posixpath.basename(x.rstrip("/")) for x in names) if SHARD_RE.match(b))


def remove_stale(partition: str, keep: set[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """After a new manifest: delete shard files not in ``keep`` and the ``.staging`` dir.

    Only genpipe's own shard files are touched (``manifest.json``, ``_report/`` and anything
    else stays). Refuses to delete a file the current manifest lists. Returns removed names.
    """
    keep = set(keep)
    if not keep:
        raise ValueError("remove_stale: refusing to remove every shard (keep is empty)")
    man = read_manifest(partition, storage_options)
    if man is not None:
        listed = {f["path"] if isinstance(f, dict) else f for f in man["files"]}
        if listed - keep:
            raise ValueError(f"remove_stale: the manifest lists files not in keep: {sorted(listed - keep)[:10]}")
    removed: list[str] = []
    with storage_errors(f"cleaning {partition}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        for name in list_shards(partition, storage_options):
            if name not in keep:
                with_retries(lambda n=name: fs.rm_file(join(ppath, n)), what=f"removing {name}")
                removed.append(name)
        staging = join(ppath, STAGING_DIR)
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
            removed.append(STAGING_DIR)
        fs.invalidate_cache(ppath)
    if removed:
        log.info("removed %d stale file(s) from %s", len(removed), redact(partition, storage_options or {}))
    return removed


def remove_partition(partition: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Unpublish then delete a partition (retention): the manifest goes first, so readers never
    see a manifest whose files are half gone."""
    with storage_errors(f"removing {partition}", storage_options):
        fs, ppath = _fs(partition, storage_options)
        try:
            fs.rm_file(join(ppath, MANIFEST_NAME))
        except FileNotFoundError:
            pass
        if fs.exists(ppath):
            fs.rm(ppath, recursive=True)
        fs.invalidate_cache(ppath)


def shard_infos_from_manifest(man: Mapping[str, Any]) -> list[ShardInfo]:
    """The manifest's files as ShardInfo (without label counts)."""
    return [ShardInfo(int(f["index"]), f["path"], int(f["rows"]), int(f["bytes"]), f["sha256"])
            for f in man["files"]]
