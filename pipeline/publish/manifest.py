"""``manifest.json``: written last, it is what makes a partition published.

:class:`Manifest` is the manifest as a typed value; :func:`Manifest.from_json` refuses one that
is inconsistent in itself (an edited row count, a missing shard index, a path that leaves the
partition), naming the file. The manifest lives in the partition's state folder
(``_genpipe/logical_date=D/manifest.json``); its ``files`` are names inside the partition's data
folder (``data/logical_date=D/``).

Every function here takes a :class:`~.layout.PartitionLocation` (a
:class:`~.partition.Partition` is one): reading, writing and removing the manifest, checking
the data folder against it, and :func:`published_in` (which of some partitions are published).
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from pipeline.publish.atomic import put_replace, remove_empty_dir
from pipeline.publish.layout import (
    MANIFEST_VERSION,
    ManifestError,
    PartitionLocation,
    ShardInfo,
    check_job,
    parse_shard_name,
    shard_name,
)
from pipeline.publish.provenance import Provenance, metadata_of_file
from pipeline.publish.schema import check_date
from pipeline.publish.storage import redact, redact_obj, safe_join, storage_errors, with_retries

log = logging.getLogger(__name__)

L = TypeVar("L", bound=PartitionLocation)


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


@dataclass
class Manifest:
    """One published partition: its files (in shard order) and what produced them."""

    job: str
    date: str
    files: list[ShardInfo]
    class_names: list[str]
    spec_hash: str
    code_version: str
    num_images: int
    published_at: str = ""
    metrics: dict[str, Any] | None = None
    label_counts: dict[str, int] | None = None
    checkpoint: str | None = None
    checkpoint_digest: str | None = None
    model: str | None = None
    format: str | None = None
    spec: dict[str, Any] | None = None
    train_epochs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = MANIFEST_VERSION

    @property
    def num_rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def num_shards(self) -> int:
        return len(self.files)

    @property
    def num_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def provenance(self) -> Provenance | None:
        return Provenance(self.spec_hash, self.checkpoint_digest) if self.checkpoint_digest else None

    def get(self, key: str, default: Any = None) -> Any:
        """A key of the manifest's JSON (for code that reads it as the file's mapping)."""
        return self.to_json().get(key, default)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": self.format_version, "job": self.job, "date": self.date,
                               "num_rows": self.num_rows, "num_images": self.num_images,
                               "num_shards": self.num_shards, "class_names": list(self.class_names),
                               "spec_hash": self.spec_hash, "code_version": self.code_version,
                               "published_at": self.published_at, "files": [f.to_json() for f in self.files],
                               "metrics": self.metrics}
        for k in ("label_counts", "checkpoint", "checkpoint_digest", "model", "format", "spec", "train_epochs"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = "manifest.json") -> Manifest:
        """The manifest in ``obj`` (parsed JSON); ManifestError naming ``where`` if it is not a
        consistent genpipe manifest (ValueError for a file path that would leave the partition)."""
        def bad(msg: str) -> ManifestError:
            return ManifestError(f"{where}: {msg}")

        if not isinstance(obj, dict) or not isinstance(obj.get("files"), list):
            raise bad("not a genpipe manifest (no 'files' list)")
        for i, f in enumerate(obj["files"]):
            if not isinstance(f, dict) or not isinstance(f.get("path"), str):
                raise bad(f"files[{i}] has no 'path'")
            safe_join("partition", f["path"])  # refuse paths that escape, before anything else
        files = []
        for i, f in enumerate(obj["files"]):
            try:
                files.append(ShardInfo(int(f["index"]), f["path"], int(f["rows"]), int(f["bytes"]), str(f["sha256"])))
            except (KeyError, TypeError, ValueError):
                raise bad(f"files[{i}] ({f['path']}) lacks index, rows, bytes or sha256") from None
        files.sort(key=lambda s: s.index)
        problem = shards_problem(files, obj.get("num_images"))
        if problem:
            raise bad(problem)
        for k in ("num_rows", "num_shards"):
            want = sum(s.rows for s in files) if k == "num_rows" else len(files)
            if k in obj and obj[k] != want:
                raise bad(f"{k} is {obj[k]!r} but its files hold {want}")
        try:
            job, date = check_job(obj["job"]), check_date(obj["date"])
            names = [str(c) for c in obj["class_names"]]
            spec_hash = str(obj["spec_hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"missing or bad job, date, class_names or spec_hash ({exc})") from None
        known = {f.name for f in fields(cls)} - {"files", "extra", "num_images", "class_names", "job", "date",
                                                 "spec_hash"}
        derived = {"num_rows", "num_shards", "files", "num_images", "class_names", "job", "date", "spec_hash"}
        kw = {k: obj[k] for k in known if k in obj}
        kw.setdefault("code_version", "")
        return cls(job=job, date=date, files=files, class_names=names, spec_hash=spec_hash,
                   num_images=int(obj["num_images"]), extra={k: v for k, v in obj.items()
                                                             if k not in known and k not in derived}, **kw)


def shards_problem(shards: Sequence[ShardInfo], num_images: Any) -> str | None:
    """What is wrong with a partition's shard list (None if it is exactly shards 0..n-1 of one
    plan, named by :func:`shard_name`, holding ``num_images`` rows)."""
    if not shards:
        return "no shards"
    ordered = sorted(shards, key=lambda s: s.index)
    parsed = [parse_shard_name(s.path) for s in ordered]
    if any(p is None for p in parsed):
        return f"not shard file names: {[s.path for s, p in zip(ordered, parsed, strict=True) if not p][:10]}"
    counts = {p[1] for p in parsed if p}
    if len(counts) != 1:
        return f"shards of different plans (of-N values {sorted(counts)})"
    n = counts.pop()
    if [p[0] for p in parsed if p] != list(range(n)) or [s.index for s in ordered] != list(range(n)):
        return f"shards must be exactly 0..{n - 1}, got indices {[s.index for s in ordered][:20]}"
    if any(s.path != shard_name(s.index, n) for s in ordered):
        return "a shard's index differs from its file name"
    total = sum(s.rows for s in ordered)
    if not isinstance(num_images, int) or isinstance(num_images, bool) or total != num_images:
        return f"shards hold {total} rows, expected {num_images!r}"
    return None


def new_manifest(part: PartitionLocation, shards: Sequence[ShardInfo], *, spec_hash: str, code_version: str,
                 num_images: int, class_names: Sequence[str], metrics: Mapping[str, Any] | None = None,
                 checkpoint: str | None = None, checkpoint_digest: str | None = None, model: str | None = None,
                 fmt: str | None = None, spec: Mapping[str, Any] | None = None, train_epochs: int | None = None,
                 extra: Mapping[str, Any] | None = None) -> Manifest:
    """A manifest for ``shards`` (checked: exactly 0..n-1 of one plan, ``num_images`` rows); every
    string redacted, every value JSON-safe."""
    problem = shards_problem(shards, num_images)
    if problem:
        raise ManifestError(problem if problem != "no shards" else "no shards to publish")
    ordered = sorted(shards, key=lambda s: s.index)
    names = [str(c) for c in class_names]
    counts = None
    if all(s.label_counts for s in ordered):
        totals: dict[int, int] = {}
        for s in ordered:
            for k, c in s.label_counts.items():
                totals[int(k)] = totals.get(int(k), 0) + int(c)
        counts = {(names[k] if 0 <= k < len(names) else str(k)): c for k, c in sorted(totals.items())}
    standard = {f.name for f in fields(Manifest)} | {"num_rows", "num_shards"}
    for k in extra or {}:
        if k in standard:
            raise ValueError(f"extra key {k!r} would shadow a standard manifest key")
    so = part.storage_options
    man = Manifest(job=part.job, date=part.date, files=[ShardInfo(s.index, s.path, s.rows, s.bytes, s.sha256)
                                                      for s in ordered],
                   class_names=names, spec_hash=spec_hash, code_version=code_version, num_images=num_images,
                   published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                   metrics=redact_obj(_jsonable(dict(metrics)), so) if metrics is not None else None,
                   label_counts=counts, checkpoint=redact(checkpoint, so) if checkpoint else None,
                   checkpoint_digest=checkpoint_digest, model=model, format=fmt,
                   spec=redact_obj(_jsonable(dict(spec)), so) if spec is not None else None,
                   train_epochs=train_epochs, extra=redact_obj(_jsonable(dict(extra or {})), so))
    return man


def write_manifest(part: PartitionLocation, man: Manifest, *, provenance: Provenance | None = None) -> Manifest:
    """Publish: check every listed shard is in the data folder with its recorded size (and, given
    ``provenance``, that its footer names it: a manifest is never committed over shard files its
    run did not write), then write ``manifest.json`` atomically. Returns the manifest as written."""
    if provenance is not None and provenance.spec_hash != man.spec_hash:
        raise ManifestError("the shards' provenance names another spec hash than the manifest's")
    data = json.dumps(redact_obj(man.to_json(), part.storage_options), indent=1, allow_nan=False).encode()
    so = part.storage_options
    with storage_errors(f"writing {part.manifest_url}", so):
        fs = part.fs
        problem = files_problem(part, man.files)
        if problem:
            raise ManifestError(f"{problem}; not publishing")
        if provenance is not None:
            _check_provenance(part, man.files, man.num_shards, provenance)
        part.guard(part.manifest_path)
        with_retries(lambda: put_replace(fs, part.manifest_path, data, part.staging_path), what="writing the manifest")
        remove_empty_dir(fs, part.staging_path)
    log.debug("published %s: %d rows in %d shards", redact(part.data_url, so), man.num_rows, man.num_shards)
    return Manifest.from_json(json.loads(data), part.manifest_url)


def data_listing(part: PartitionLocation) -> dict[str, int | None]:
    """{file name: size} of the partition's data folder (empty if it does not exist)."""
    fs = part.fs
    fs.invalidate_cache(part.data_path)
    try:
        listing = with_retries(lambda: fs.ls(part.data_path, detail=True), what="listing the partition")
    except FileNotFoundError:
        return {}
    return {posixpath.basename(e["name"].rstrip("/")): e.get("size") for e in listing if e.get("type") != "directory"}


def files_problem(part: PartitionLocation, shards: Sequence[ShardInfo]) -> str | None:
    """None if every shard file is in the data folder with its recorded size (one listing)."""
    sizes = data_listing(part)
    missing = [s.path for s in shards if s.path not in sizes]
    changed = [f"{s.path} ({sizes[s.path]} bytes, recorded {s.bytes})" for s in shards
               if s.path in sizes and sizes[s.path] != s.bytes]
    if missing or changed:
        return "; ".join(x for x in (f"missing: {missing[:10]}" if missing else "",
                                     f"changed since written: {changed[:10]}" if changed else "") if x)
    return None


def _check_provenance(part: PartitionLocation, shards: Sequence[ShardInfo], n: int, prov: Provenance,
                      threads: int = 16) -> None:
    """Every shard's footer names this run's spec hash and checkpoint digest (footers only)."""
    fs = part.fs

    def check(s: ShardInfo) -> str | None:
        meta = with_retries(lambda: metadata_of_file(fs, part.data_file(s.path)), what=f"reading {s.path}'s footer")
        problem = prov.problem(meta, s.index, n)
        return f"{s.path}: {problem}" if problem else None

    with ThreadPoolExecutor(max(1, min(threads, len(shards)))) as ex:
        bad = [p for p in ex.map(check, shards) if p]
    if bad:
        raise ManifestError(f"{len(bad)} shard(s) were not written by this run, not publishing: {'; '.join(bad[:3])}")


def parse_manifest_bytes(raw: bytes, where: str) -> Manifest:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise ManifestError(f"{where}: not valid JSON") from None
    return Manifest.from_json(obj, where)


def manifest_bytes(part: PartitionLocation) -> bytes | None:
    """The raw ``manifest.json`` of a partition, or None if there is none."""
    with storage_errors(f"reading {part.manifest_url}", part.storage_options):
        fs, path = part.fs, part.manifest_path
        part.guard(path)
        fs.invalidate_cache(path)
        try:
            return with_retries(lambda: fs.cat_file(path), what="reading the manifest")
        except FileNotFoundError:
            return None


def load_manifest(part: PartitionLocation) -> Manifest | None:
    """The published manifest, or None (not published). ManifestError if unreadable or inconsistent."""
    raw = manifest_bytes(part)
    return None if raw is None else parse_manifest_bytes(raw, redact(part.manifest_url, part.storage_options))


def remove_manifest(part: PartitionLocation) -> bool:
    """Delete the manifest only; False if there was none."""
    with storage_errors(f"unpublishing {part.data_url}", part.storage_options):
        fs, path = part.fs, part.manifest_path
        part.guard(path)
        try:
            with_retries(lambda: fs.rm_file(path), what="removing the manifest")
        except FileNotFoundError:
            return False
        fs.invalidate_cache(path)
    return True


def published_in(parts: Iterable[L], *, strict: bool = True) -> list[tuple[L, Manifest]]:
    """Those of ``parts`` that are published, each with its manifest, in order. An unreadable
    manifest raises ManifestError (``strict``) or is skipped with a warning."""
    out = []
    for p in parts:
        try:
            man = load_manifest(p)
        except ManifestError:
            if strict:
                raise
            log.warning("skipping %s: its manifest is unreadable", redact(p.manifest_url, p.storage_options))
            continue
        if man is not None:
            out.append((p, man))
    return out
