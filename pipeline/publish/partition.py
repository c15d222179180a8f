"""One logical date of a job's dataset: the object that owns its files.

:class:`Partition` owns the partition's run state, its shards (commit, verify, resume), its
manifest (published last, verified before it is trusted), its report, its writer lease,
listing and removal (manifest first); every change of what is published rewrites the dataset
card (:mod:`.card`). The runner, the sampler, the CLI and schedules go through it; the folder
names come from :mod:`.layout` alone.

Local disk: genpipe writes no file through a symbolic link inside the dataset root. Every
path it writes, reads as its own state or removes is checked, component by component below the
root, and a link is refused (:class:`LayoutError`, exit 2) instead of followed. (The root
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
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.publish.atomic import is_local_fs, put_replace, remove_empty_dir
from pipeline.publish.layout import (
    CARD_NAME,
    DATA_DIR,
    LEASE_NAME,
    MANIFEST_NAME,
    REPORT_DIR,
    RUN_STATE_NAME,
    STAGING_DIR,
    STATE_DIR,
    LayoutError,
    ManifestError,
    ShardInfo,
    check_job,
    data_url,
    dataset_root,
    date_dir,
    locate,
    old_layout_message,
    parse_date_dir,
    parse_old_date_dir,
    parse_shard_name,
    shard_name,
    state_url,
)
from pipeline.publish.manifest import (
    Manifest,
    data_listing,
    files_problem,
    new_manifest,
    parse_manifest_bytes,
    write_manifest,
)
from pipeline.publish.provenance import Provenance
from pipeline.publish.schema import check_date
from pipeline.publish.storage import join, redact, storage_errors, url_to_fs, with_retries

log = logging.getLogger(__name__)

#: the already-published check reads every byte (sha256) only up to this size; above it, sizes,
#: footers (row counts, provenance) and the manifest's own consistency are checked
SHA256_VERIFY_MAX_BYTES = 512 * 2**20


def refuse_links(fs: Any, root: str, path: str) -> None:
    """Local disk: LayoutError if an existing component of ``path`` strictly below ``root`` is a
    symbolic link. Object stores have no links: nothing to check."""
    if not is_local_fs(fs):
        return
    rel = posixpath.relpath(path, root)
    if rel == ".":
        return
    if rel == ".." or rel.startswith("../"):
        raise LayoutError(f"{path} lies outside the dataset root {root}")
    cur = root
    for comp in rel.split("/"):
        cur = posixpath.join(cur, comp)
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(st.st_mode):
            raise LayoutError(f"{cur} is a symbolic link: genpipe does not write through links inside a dataset "
                              f"folder ({root}); replace it with a real folder or file")


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
class Partition:
    """One logical date of job ``job`` under ``output`` (see :mod:`pipeline.publish.layout`)."""

    output: str
    job: str
    date: str
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_job(self.job)
        check_date(self.date)
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))

    # ------------------------------------------------------------------------------ construction

    @classmethod
    def of(cls, output: str, job: str, date: str, storage_options: Mapping[str, Any] | None = None) -> Partition:
        return cls(str(output), job, date, dict(storage_options or {}))

    @classmethod
    def at(cls, root: str, date: str, storage_options: Mapping[str, Any] | None = None) -> Partition:
        """The partition of ``date`` in the dataset root ``root`` (``<output>/<job>``)."""
        head, _, job = str(root).rstrip("/").rpartition("/")
        return cls(head, job, date, dict(storage_options or {}))

    @classmethod
    def from_url(cls, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 allow_old: bool = False) -> Partition | None:
        """The partition whose data or state folder ``url`` is; None if ``url`` names no
        partition (a dataset root, say). A genpipe 0.1 ``date=D`` folder: LayoutError, or None
        with ``allow_old``."""
        try:
            root, d = locate(url)
        except LayoutError:
            if allow_old:
                return None
            raise
        return cls.at(root, d, storage_options) if d is not None else None

    def __str__(self) -> str:
        return self.data_url

    # ------------------------------------------------------------------------------------- names

    @property
    def root(self) -> str:
        return dataset_root(self.output, self.job)

    @property
    def data_url(self) -> str:
        return data_url(self.root, self.date)

    @property
    def state_url(self) -> str:
        return state_url(self.root, self.date)

    @property
    def manifest_url(self) -> str:
        return join(self.state_url, MANIFEST_NAME)

    @property
    def report_url(self) -> str:
        return join(self.state_url, REPORT_DIR)

    def data_file_url(self, name: str) -> str:
        return join(self.data_url, name)

    @property
    def fs(self) -> Any:
        return url_to_fs(self.root, self.storage_options)[0]

    @property
    def root_path(self) -> str:
        return url_to_fs(self.root, self.storage_options)[1].rstrip("/")

    @property
    def data_path(self) -> str:
        return join(self.root_path, DATA_DIR, date_dir(self.date))

    @property
    def state_path(self) -> str:
        return join(self.root_path, STATE_DIR, date_dir(self.date))

    @property
    def manifest_path(self) -> str:
        return join(self.state_path, MANIFEST_NAME)

    @property
    def run_state_path(self) -> str:
        return join(self.state_path, RUN_STATE_NAME)

    @property
    def lease_path(self) -> str:
        return join(self.state_path, LEASE_NAME)

    @property
    def staging_path(self) -> str:
        return join(self.state_path, STAGING_DIR)

    @property
    def report_path(self) -> str:
        return join(self.state_path, REPORT_DIR)

    def data_file(self, name: str) -> str:
        """Path (inside :attr:`fs`) of a file of the data folder; ``name`` must be a plain shard name."""
        if parse_shard_name(name) is None:
            raise ValueError(f"not a shard file name: {name!r}")
        return join(self.data_path, name)

    def _where(self, url: str) -> str:
        return redact(url, self.storage_options)

    # ----------------------------------------------------------------------------------- symlinks

    def guard(self, path: str) -> None:
        """Local disk: LayoutError if any existing component of ``path`` below the dataset root
        is a symbolic link (genpipe never writes, reads its state or removes through one)."""
        refuse_links(self.fs, self.root_path, path)

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
        raw = self._read_manifest_bytes()
        return None if raw is None else parse_manifest_bytes(raw, self._where(self.manifest_url))

    def _read_manifest_bytes(self) -> bytes | None:
        with storage_errors(f"reading {self.manifest_url}", self.storage_options):
            fs, path = self.fs, self.manifest_path
            self.guard(path)
            fs.invalidate_cache(path)
            try:
                return with_retries(lambda: fs.cat_file(path), what="reading the manifest")
            except FileNotFoundError:
                return None

    def check(self, expected: Expected | None = None, *, threads: int = 16,
              sha256_max_bytes: int = SHA256_VERIFY_MAX_BYTES) -> PublishedCheck:
        """Whether the partition is published and its files back its manifest up.

        Checked, cheapest first: the manifest parses and is consistent in itself (row counts,
        shard indices, names); it matches ``expected`` (the spec's image count and shard size);
        every file is in the data folder with its recorded size (one listing); every footer has
        the recorded row count and names the manifest's spec hash and checkpoint digest; and,
        up to ``sha256_max_bytes`` in all, every file's sha256.
        """
        raw = self._read_manifest_bytes()
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
        from pipeline.publish.commit import write_shard

        return write_shard(self, index, num_shards, table, provenance=provenance)

    def verify_shard(self, index: int, num_shards: int, expected_rows: int, *, expected_sha256: str | None = None,
                     provenance: Provenance | None = None) -> ShardInfo | None:
        from pipeline.publish.commit import verify_shard

        return verify_shard(self, index, num_shards, expected_rows, expected_sha256=expected_sha256,
                            provenance=provenance)

    def remove_shard(self, index: int, num_shards: int) -> bool:
        return self.remove_data_file(shard_name(index, num_shards))

    def remove_data_file(self, name: str) -> bool:
        """Delete one file of the data folder; False if it was absent."""
        with storage_errors(f"removing {self.data_file_url(name)}", self.storage_options):
            fs, path = self.fs, self.data_file(name)
            self.guard(path)
            try:
                with_retries(lambda: fs.rm_file(path), what=f"removing {name}")
            except FileNotFoundError:
                return False
            fs.invalidate_cache(path)
        return True

    def shard_names(self) -> list[str]:
        """Sorted names of the shard files in the data folder (none if it does not exist)."""
        with storage_errors(f"listing {self.data_url}", self.storage_options):
            self.guard(self.data_path)
            return sorted(n for n in data_listing(self) if parse_shard_name(n))

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
        """Delete the manifest only (before the files it lists change); False if there was none."""
        with storage_errors(f"unpublishing {self.data_url}", self.storage_options):
            fs, path = self.fs, self.manifest_path
            self.guard(path)
            try:
                with_retries(lambda: fs.rm_file(path), what="removing the manifest")
            except FileNotFoundError:
                return False
            fs.invalidate_cache(path)
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
        from pipeline.publish.card import update_card

        update_card(self.output, self.job, self.storage_options)

    # ----------------------------------------------------------------------------- lease, report

    @contextlib.contextmanager
    def lease(self, **kw: Any) -> Iterator[Any]:
        """Hold the partition's writer lease (see :mod:`.writer_lease`)."""
        from pipeline.publish.writer_lease import partition_lease

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


def check_layout(root: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """LayoutError if the dataset root holds partitions in genpipe 0.1's layout (``date=D/``)."""
    old = old_partitions(root, storage_options)
    if old:
        raise LayoutError(old_layout_message(redact(root, storage_options or {}), sorted(old)))


def old_partitions(root: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{folder name: date} of genpipe 0.1 partition folders directly under ``root``."""
    return {n: d for n, d in ((n, parse_old_date_dir(n)) for n in _subdirs(root, storage_options)) if d}


def _subdirs(url: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    so = dict(storage_options or {})
    with storage_errors(f"listing {url}", so):
        fs, path = url_to_fs(url, so)
        fs.invalidate_cache(path)
        try:
            entries = with_retries(lambda: fs.ls(path, detail=True), what="listing a dataset")
        except FileNotFoundError:
            return []
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory")


def partitions(output: str, job: str, storage_options: Mapping[str, Any] | None = None) -> list[Partition]:
    """Every partition of the job that has a state folder, by date (published or not)."""
    root = dataset_root(output, job)
    check_layout(root, storage_options)
    dates = sorted(d for d in map(parse_date_dir, _subdirs(join(root, STATE_DIR), storage_options)) if d)
    return [Partition.of(output, job, d, storage_options) for d in dates]


def published(output: str, job: str, storage_options: Mapping[str, Any] | None = None,
              *, strict: bool = True) -> list[tuple[Partition, Manifest]]:
    """Every published partition of the job with its manifest, by date. An unreadable manifest
    raises ManifestError (``strict``) or is skipped with a warning."""
    out = []
    for p in partitions(output, job, storage_options):
        try:
            man = p.read_manifest()
        except ManifestError:
            if strict:
                raise
            log.warning("skipping %s: its manifest is unreadable", redact(p.manifest_url, p.storage_options))
            continue
        if man is not None:
            out.append((p, man))
    return out
