"""One logical date of a job's dataset: the object that owns its files.

:class:`Partition` owns the partition's run state, its shards (commit, verify, resume), its
manifest (published last, verified before it is trusted), its report, its writer lease,
listing and removal (manifest first); every change of what is published rewrites the dataset
card (:mod:`.card`). The runner, the sampler, the CLI and schedules go through it; the folder
names come from :mod:`.layout` alone.

It stands on top of the package: its location (:class:`~.layout.PartitionLocation`) is what the
modules below it (:mod:`.commit`, :mod:`.manifest`, :mod:`.writer_lease`, :mod:`.card`) work
on, and none of them imports this module.

Local disk: genpipe writes no file through a symbolic link inside the dataset root. Every
path it writes, reads as its own state or removes is checked, component by component below the
root, and a link is refused (:class:`~.layout.LayoutError`, exit 2) instead of followed. (The root
itself, and anything above it, may be a link.) The check runs just before each write: it
guards against a link planted in the folder, not against a concurrent attacker who swaps one
in between the check and the write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.publish.atomic import is_local_fs, put_replace, remove_empty_dir
from pipeline.publish.card import update_card
from pipeline.publish.commit import list_shards, remove_data_file, verify_shard, write_shard
from pipeline.publish.layout import (
    CARD_NAME,
    LEASE_NAME,
    REPORT_DIR,
    RUN_STATE_NAME,
    STAGING_DIR,
    PartitionLocation,
    ShardInfo,
    check_layout,
    old_partitions,
    parse_shard_name,
    refuse_links,
    shard_name,
)
from pipeline.publish.manifest import (
    Manifest,
    files_problem,
    load_manifest,
    manifest_bytes,
    new_manifest,
    published_in,
    remove_manifest,
    write_manifest,
)
from pipeline.publish.provenance import Provenance
from pipeline.publish.storage import join, storage_errors, with_retries
from pipeline.publish.writer_lease import partition_lease

log = logging.getLogger(__name__)

__all__ = [
    "SHA256_VERIFY_MAX_BYTES", "Expected", "Partition", "PartitionLocation", "PublishedCheck", "check_layout",
    "old_partitions", "partitions", "published", "refuse_links",
]

#: the already-published check reads every byte (sha256) only up to this size; above it, sizes,
#: footers (row counts, provenance) and the manifest's own consistency are checked
SHA256_VERIFY_MAX_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Expected:
    """What the spec says a partition holds: checked against a published manifest."""

    num_images: int
    shard_size: int

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(self.num_images / self.shard_size))

    def rows(self, i: int) -> int:
        return min(self.shard_size, self.num_images - i * self.shard_size)


@dataclass
class PublishedCheck:
    """What a partition's manifest says, and whether its files back it up.

    ``present``: a manifest file exists. ``spec_hash``: the spec hash it names (even when it is
    inconsistent; None when unreadable). ``manifest``: the parsed manifest (None when absent,
    unreadable or inconsistent). ``problem``: why it cannot be trusted as published (None: verified).
    """

    present: bool = False
    spec_hash: str | None = None
    manifest: Manifest | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.manifest is not None and self.problem is None


@dataclass(frozen=True)
class Partition(PartitionLocation):
    """One logical date of job ``job`` under ``output`` (see :mod:`pipeline.publish.layout`): its
    location (:class:`~.layout.PartitionLocation`: names, filesystem, link guard) and the protocol
    over it."""

    # ----------------------------------------------------------------------------------- symlinks

    def check_links(self) -> None:
        """LayoutError if anything this partition writes (data and state folders, manifest, run
        state, lease, staging, report and its files, the dataset card) is, or lies under, a
        symbolic link: checked before a run does any work."""
        card = join(self.root_path, CARD_NAME)
        for p in (card, self.manifest_path, self.run_state_path, self.lease_path, self.staging_path,
                  self.report_path, self.data_path):
            self.guard(p)
        fs = self.fs
        if is_local_fs(fs):
            for d in (self.report_path, self.data_path, self.state_path):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for e in os.scandir(d):
                        self.guard(e.path)

    # ----------------------------------------------------------------------------------- manifest

    def read_manifest(self) -> Manifest | None:
        """The published manifest, or None (not published). ManifestError if unreadable or inconsistent."""
        return load_manifest(self)

    def check(self, expected: Expected | None = None, *, threads: int = 16,
              sha256_max_bytes: int = SHA256_VERIFY_MAX_BYTES) -> PublishedCheck:
        """Whether the partition is published and its files back its manifest up.

        Checked, cheapest first: the manifest parses and is consistent in itself (row counts,
        shard indices, names); it matches ``expected`` (the spec's image count and shard size);
        every file is in the data folder with its recorded size (one listing); every footer has
        the recorded row count and names the manifest's spec hash and checkpoint digest; and,
        up to ``sha256_max_bytes`` in all, every file's sha256.
        """
        raw = manifest_bytes(self)
        if raw is None:
            return PublishedCheck()
        out = PublishedCheck(present=True)
        try:
            obj = json.loads(raw)
        except ValueError:
            out.problem = "its manifest is not valid JSON"
            return out
        if isinstance(obj, dict) and isinstance(obj.get("spec_hash"), str):
            out.spec_hash = obj["spec_hash"]
        try:
            man = Manifest.from_json(obj, self._where(self.manifest_url))
        except ValueError as exc:
            out.problem = str(exc)
            return out
        out.manifest = man
        out.problem = self._files_problem(man, expected, threads, sha256_max_bytes)
        return out

    def _files_problem(self, man: Manifest, expected: Expected | None, threads: int, sha_max: int) -> str | None:
        if expected is not None:
            if man.num_images != expected.num_images or man.num_shards != expected.num_shards:
                return (f"the manifest lists {man.num_images} images in {man.num_shards} shards; the spec makes "
                        f"{expected.num_images} in {expected.num_shards}")
            wrong = [f.path for f in man.files if f.rows != expected.rows(f.index)]
            if wrong:
                return f"the manifest's row counts differ from the plan's: {wrong[:5]}"
        with storage_errors(f"verifying {self.data_url}", self.storage_options):
            self.guard(self.data_path)
            problem = files_problem(self, man.files)
            if problem:
                return problem
            fs, n, prov = self.fs, man.num_shards, man.provenance
            full = man.num_bytes <= sha_max

            def one(s: ShardInfo) -> str | None:
                path = self.data_file(s.path)
                if full:
                    data = with_retries(lambda: fs.cat_file(path), what=f"reading {s.path}")
                    if hashlib.sha256(data).hexdigest() != s.sha256:
                        return f"{s.path}: sha256 differs from the manifest's"
                    md = pq.read_metadata(pa.BufferReader(data))
                else:
                    with fs.open(path, "rb") as f:
                        md = pq.ParquetFile(f).metadata
                meta = md.metadata
                if md.num_rows != s.rows:
                    return f"{s.path}: its footer says {md.num_rows} rows, the manifest {s.rows}"
                if prov is not None and (p := prov.problem(meta, s.index, n)):
                    return f"{s.path}: {p}"
                return None

            try:
                with ThreadPoolExecutor(max(1, min(threads, len(man.files)))) as ex:
                    problems = [p for p in ex.map(one, man.files) if p]
            except FileNotFoundError as exc:
                return f"a file vanished while it was checked ({exc})"
            except Exception as exc:  # noqa: BLE001 - an unreadable footer is a damaged file
                if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                    raise
                return f"a file does not read as Parquet ({type(exc).__name__})"
        return "; ".join(problems[:3]) if problems else None

    # ---------------------------------------------------------------------------------- run state

    def run_state(self, spec_hash: str) -> dict[str, Any]:
        """The partition's run state for ``spec_hash``: ``created_at`` of its first attempt (so
        a resumed run writes identical rows). Written on first use; a garbled or foreign one is replaced."""
        so = self.storage_options
        with storage_errors(f"reading the run state of {self.state_url}", so):
            fs, path = self.fs, self.run_state_path
            self.guard(path)
            fs.invalidate_cache(path)
            try:
                raw = with_retries(lambda: fs.cat_file(path), what=f"reading {RUN_STATE_NAME}")
            except FileNotFoundError:
                raw = None
        if raw is not None:
            try:
                st = json.loads(raw)
                if isinstance(st, dict) and st.get("spec_hash") == spec_hash:
                    datetime.fromisoformat(st["created_at"])
                    return st
            except (ValueError, KeyError, TypeError):
                log.warning("%s: not a genpipe run state: replacing it", self._where(join(self.state_url, RUN_STATE_NAME)))
        st = {"spec_hash": spec_hash, "created_at": datetime.now(UTC).isoformat()}
        self._put(path, json.dumps(st).encode(), what=RUN_STATE_NAME)
        return st

    def _put(self, path: str, data: bytes, what: str) -> None:
        with storage_errors(f"writing {what} of {self.state_url}", self.storage_options):
            self.guard(path)
            self.guard(self.staging_path)
            with_retries(lambda: put_replace(self.fs, path, data, self.staging_path), what=f"writing {what}")
            remove_empty_dir(self.fs, self.staging_path)

    # ------------------------------------------------------------------------------------- shards

    def write_shard(self, index: int, num_shards: int, table: Any, *,
                    provenance: Provenance | None = None) -> ShardInfo:
        """Commit one shard exactly once (:func:`.commit.write_shard`)."""
        return write_shard(self, index, num_shards, table, provenance=provenance)

    def verify_shard(self, index: int, num_shards: int, expected_rows: int, *, expected_sha256: str | None = None,
                     provenance: Provenance | None = None) -> ShardInfo | None:
        """The shard's info if its file is complete and this run's (:func:`.commit.verify_shard`)."""
        return verify_shard(self, index, num_shards, expected_rows, expected_sha256=expected_sha256,
                            provenance=provenance)

    def remove_shard(self, index: int, num_shards: int) -> bool:
        return self.remove_data_file(shard_name(index, num_shards))

    def remove_data_file(self, name: str) -> bool:
        """Delete one file of the data folder; False if it was absent."""
        return remove_data_file(self, name)

    def shard_names(self) -> list[str]:
        """Sorted names of the shard files in the data folder (none if it does not exist)."""
        return list_shards(self)

    def done_shards(self, num_shards: int, rows_of: Callable[[int], int], provenance: Provenance | None,
                    threads: int = 16) -> dict[int, ShardInfo]:
        """Shards already committed (resume): files of this plan whose footer, rows and checksums
        read back and whose footer names ``provenance``. Any other shard file of the plan (corrupt,
        truncated, or another run's) is removed, so that it is regenerated."""
        present = [p[0] for p in map(parse_shard_name, self.shard_names()) if p and p[1] == num_shards]
        if not present:
            return {}

        def check(i: int) -> tuple[int, ShardInfo | None]:
            info = self.verify_shard(i, num_shards, rows_of(i), provenance=provenance)
            if info is None:
                self.remove_shard(i, num_shards)
            return i, info

        with ThreadPoolExecutor(min(threads, len(present))) as ex:
            return {i: info for i, info in ex.map(check, present) if info is not None}

    # ------------------------------------------------------------------------------------ publish

    def publish(self, shards: Sequence[ShardInfo], *, provenance: Provenance | None = None,
                **fields: Any) -> Manifest:
        """Write the manifest (last: after every shard is checked to be in place and, given
        ``provenance``, to be this run's), remove stale shards and staging, rewrite the card.
        ``fields``: :func:`pipeline.publish.manifest.new_manifest`'s keywords."""
        man = write_manifest(self, new_manifest(self, shards, **fields), provenance=provenance)
        self.remove_stale({s.path for s in man.files})
        self.update_card()
        return man

    def unpublish(self) -> bool:
        """Delete the manifest only (before the files it lists change), then rewrite the card;
        False (the card untouched) if there was none."""
        if not remove_manifest(self):
            return False
        self.update_card()
        return True

    def remove_stale(self, keep: set[str]) -> list[str]:
        """After a new manifest: delete shard files not in ``keep`` and the staging folder.

        Only genpipe's own shard files are touched. Refuses to delete a file the current
        manifest lists. Returns the removed names.
        """
        keep = set(keep)
        if not keep:
            raise ValueError("remove_stale: refusing to remove every shard (keep is empty)")
        man = self.read_manifest()
        if man is not None and {f.path for f in man.files} - keep:
            raise ValueError(f"remove_stale: the manifest lists files not in keep: "
                             f"{sorted({f.path for f in man.files} - keep)[:10]}")
        removed = [n for n in self.shard_names() if n not in keep and self.remove_data_file(n)]
        if self.clean_staging():
            removed.append(STAGING_DIR)
        if removed:
            log.info("removed %d stale file(s) from %s", len(removed), self._where(self.data_url))
        return removed

    def clean_staging(self) -> bool:
        """Remove the staging folder (temp files a failed or killed write left); False if absent.
        Only while holding the partition (its lease): a live writer's temp files are in it."""
        with storage_errors(f"cleaning {self.state_url}", self.storage_options):
            fs, path = self.fs, self.staging_path
            self.guard(path)
            fs.invalidate_cache(path)
            if not fs.exists(path):
                return False
            fs.rm(path, recursive=True)
            fs.invalidate_cache(path)
        return True

    def has_staging(self) -> bool:
        fs, path = self.fs, self.staging_path
        fs.invalidate_cache(path)
        try:
            return bool(fs.exists(path) and (fs.ls(path) if is_local_fs(fs) else fs.find(path)))
        except FileNotFoundError:
            return False

    def update_card(self) -> None:
        """Rewrite the dataset card from every published manifest (:func:`.card.update_card`)."""
        update_card(self.output, self.job, self.storage_options)

    # ----------------------------------------------------------------------------- lease, report

    @contextlib.contextmanager
    def lease(self, **kw: Any) -> Iterator[Any]:
        """Hold the partition's writer lease (see :mod:`.writer_lease`)."""
        self.guard(self.lease_path)
        with partition_lease(self, **kw) as lease:
            yield lease

    def write_report(self, files: Mapping[str, bytes]) -> list[str]:
        """Write the run report's files into ``report/`` (atomic each); returns their URLs."""
        urls = []
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"report file name {name!r}")
            self._put(join(self.report_path, name), data, what=f"{REPORT_DIR}/{name}")
            urls.append(join(self.report_url, name))
        return urls

    # ------------------------------------------------------------------------------------ removal

    def remove(self) -> None:
        """Unpublish, then delete the partition's data and state (retention). The manifest goes
        first, so no reader ever sees a manifest whose files are half gone; the card follows."""
        so = self.storage_options
        with self.lease():
            with storage_errors(f"removing {self.data_url}", so):
                fs = self.fs
                for p in (self.manifest_path, self.data_path, self.state_path):
                    self.guard(p)
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(self.manifest_path)
                fs.invalidate_cache(self.manifest_path)
                fs.invalidate_cache(self.data_path)
                if fs.exists(self.data_path):
                    fs.rm(self.data_path, recursive=True)
                fs.invalidate_cache(self.state_path)
                with contextlib.suppress(FileNotFoundError):
                    for e in fs.ls(self.state_path, detail=False):
                        if posixpath.basename(e.rstrip("/")) != LEASE_NAME:
                            fs.rm(e, recursive=True)
                fs.invalidate_cache(self.root_path)
        remove_empty_dir(self.fs, self.state_path)
        self.update_card()


# -------------------------------------------------------------------------------- a whole dataset


def partitions(output: str, job: str, storage_options: Mapping[str, Any] | None = None) -> list[Partition]:
    """Every partition of the job that has a state folder, by date (published or not)."""
    return Partition.every(output, job, storage_options)


def published(output: str, job: str, storage_options: Mapping[str, Any] | None = None,
              *, strict: bool = True) -> list[tuple[Partition, Manifest]]:
    """Every published partition of the job with its manifest, by date. An unreadable manifest
    raises ManifestError (``strict``) or is skipped with a warning."""
    return published_in(partitions(output, job, storage_options), strict=strict)
