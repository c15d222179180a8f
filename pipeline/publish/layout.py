"""Where a published dataset's files live: the one place that names every folder and file.

A job's dataset root, ``<sample.output>/<job>/``, follows the Hugging Face Hub convention (a
dataset card at the root, data files in a folder of their own, tool state elsewhere)::

    README.md                                   dataset card: YAML dataset_info + configs, prose
    data/logical_date=2026-11-25/               Parquet only: what every reader is pointed at
        part-00000-of-00003.parquet ...
    _genpipe/logical_date=2026-11-25/           genpipe's own state for that date, outside every data glob
        manifest.json                           written last: files, rows, sha256, spec hash, metrics
        run.json                                the partition's first attempt (created_at), by spec hash
        lease.json                              the writer lease while a run holds the partition
        staging/                                temporary files of atomic writes (local disk, emulation)
        report/report.html grid.png metrics.json

The folder key is ``logical_date``, not ``date``: every file keeps ``date`` as a real string
column (Hugging Face ``datasets`` ignores hive folders), and a hive key of the same name would
clash with it in readers that infer it as ``dictionary<string>`` (pandas, ``pyarrow.parquet``).
Hive-aware readers add ``logical_date`` beside ``date`` (same values; their own type).

:class:`PartitionLocation` is one date of one job as a place: its folders, files, filesystem and
the symbolic-link guard. :class:`pipeline.publish.partition.Partition` extends it with the
partition protocol (run state, shards, publish, lease, removal); the modules below that protocol
(:mod:`.manifest`, :mod:`.commit`, :mod:`.writer_lease`, :mod:`.card`) take a location.

Before this layout (genpipe 0.1), ``<root>/date=D/`` held the shards together with
``manifest.json``, ``.genpipe-run.json`` and ``_report/``: :func:`parse_old_date_dir` recognises
such a folder so that it is migrated or refused, never mixed with this layout.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pipeline.errors import EXIT_BAD_INPUT, EXIT_FAILED, GenpipeError
from pipeline.publish.atomic import is_local_fs
from pipeline.publish.schema import check_date
from pipeline.publish.storage import SafeMessage, join, redact, storage_errors, url_to_fs, with_retries

DATA_DIR = "data"
STATE_DIR = "_genpipe"
CARD_NAME = "README.md"
DATE_KEY = "logical_date"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2
RUN_STATE_NAME = "run.json"
LEASE_NAME = "lease.json"
REPORT_DIR = "report"
STAGING_DIR = "staging"
SHARD_RE = re.compile(r"^part-(\d{5,})-of-(\d{5,})\.parquet$")
_JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_DATE_DIR_RE = re.compile(rf"^{DATE_KEY}=(\d{{4}}-\d{{2}}-\d{{2}})$")
_OLD_DATE_DIR_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
#: what a genpipe 0.1 partition folder held besides its shards
OLD_SIDECARS = ("manifest.json", ".genpipe-run.json", ".genpipe-lease.json", "_report", ".staging")


class ManifestError(GenpipeError, ValueError, SafeMessage):
    """A manifest that cannot be used (unreadable, or inconsistent with its shards). Exit code 1
    (``genpipe run`` turns an unreadable published manifest into bad input itself)."""

    exit_code = EXIT_FAILED
    name_in_message = True


class LayoutError(GenpipeError, ValueError, SafeMessage):
    """A dataset folder that is not in this layout (an older genpipe's, or not genpipe's), or a
    symbolic link where genpipe writes. Exit code 2: the input has to change."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class ShardInfo:
    """One committed shard file. ``path`` is its file name inside the partition's data folder;
    ``label_counts`` (rows per label) feeds the manifest's ``label_counts``."""

    index: int
    path: str
    rows: int
    bytes: int
    sha256: str
    label_counts: dict[int, int] = field(default_factory=dict)
    filter_stats: dict[str, Any] | None = None  # sample.filter's counts from the footer (None: no filter)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "index": self.index, "rows": self.rows, "bytes": self.bytes,
                "sha256": self.sha256}


def shard_name(i: int, n: int) -> str:
    """``part-00000-of-00042.parquet``: file name of shard ``i`` of ``n``."""
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard index {i} out of range for {n} shard(s)")
    return f"part-{i:05d}-of-{n:05d}.parquet"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """(index, num_shards) of a shard file name, or None if it is not one."""
    m = SHARD_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_job(job: str) -> str:
    if not isinstance(job, str) or not _JOB_RE.match(job) or ".." in job:
        raise ValueError(f"job name {job!r} cannot be a path component")
    return job


def date_dir(date: str) -> str:
    """``logical_date=YYYY-MM-DD``: the folder of one logical date (data and state alike)."""
    return f"{DATE_KEY}={check_date(date)}"


def _date_of(pattern: re.Pattern[str], name: str) -> str | None:
    m = pattern.match(name)
    if not m:
        return None
    try:
        return check_date(m.group(1))
    except ValueError:
        return None


def parse_date_dir(name: str) -> str | None:
    """The date of a :func:`date_dir` folder name, or None if ``name`` is not one."""
    return _date_of(_DATE_DIR_RE, name)


def parse_old_date_dir(name: str) -> str | None:
    """The date of a genpipe 0.1 partition folder (``date=YYYY-MM-DD``), or None."""
    return _date_of(_OLD_DATE_DIR_RE, name)


def dataset_root(output_url: str, job: str) -> str:
    """``<output>/<job>``: the dataset root (card, ``data/``, ``_genpipe/``)."""
    return join(output_url, check_job(job))


def data_url(root: str, date: str) -> str:
    """``<root>/data/logical_date=D``: one date's Parquet files."""
    return join(root, DATA_DIR, date_dir(date))


def state_url(root: str, date: str) -> str:
    """``<root>/_genpipe/logical_date=D``: one date's manifest, run state, lease, staging and report."""
    return join(root, STATE_DIR, date_dir(date))


def partition_url(output_url: str, job: str, date: str) -> str:
    """The data folder of one published date (``<output>/<job>/data/logical_date=D``)."""
    return data_url(dataset_root(output_url, job), date)


def locate(url: str) -> tuple[str, str | None]:
    """(dataset root, date or None) of a URL naming a dataset root, a partition's data folder
    (``.../data/logical_date=D``) or its state folder (``.../_genpipe/logical_date=D``).

    LayoutError for a genpipe 0.1 partition folder (``.../date=D``)."""
    u = str(url).rstrip("/")
    head, _, last = u.rpartition("/")
    if parse_old_date_dir(last):
        raise LayoutError(old_layout_message(head or ".", [last]))
    d = parse_date_dir(last)
    if d is not None:
        root, _, middle = head.rpartition("/")
        if middle in (DATA_DIR, STATE_DIR) and root:
            return root, d
    if last in (DATA_DIR, STATE_DIR) and head:
        return head, None
    return u, None


def old_layout_message(root: str, names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:3]) + (" ..." if len(names) > 3 else "")
    return (f"{root} holds partition folders in genpipe's old layout ({shown}: shards beside manifest.json); "
            f"this genpipe writes {DATA_DIR}/{DATE_KEY}=D/ and {STATE_DIR}/{DATE_KEY}=D/ instead and will not "
            f"mix the two. Move them with `genpipe migrate {root}` (or delete them), then run again")


def partition_fs(url: str, so: Mapping[str, Any] | None) -> tuple[Any, str]:
    """(filesystem, path without a trailing slash) of a URL."""
    fs, path = url_to_fs(url, so)
    return fs, path.rstrip("/")


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


@dataclass(frozen=True)
class PartitionLocation:
    """Where one logical date of job ``job`` under ``output`` lives: its URLs and paths, its
    filesystem and the link guard. It reads nothing but folder listings (:meth:`every`) and, for
    the guard, file modes on local disk. The constructors build the class they are called on, so
    ``Partition.of(...)`` is a ``Partition``."""

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
    def of(cls, output: str, job: str, date: str, storage_options: Mapping[str, Any] | None = None) -> Self:
        return cls(str(output), job, date, dict(storage_options or {}))

    @classmethod
    def at(cls, root: str, date: str, storage_options: Mapping[str, Any] | None = None) -> Self:
        """The partition of ``date`` in the dataset root ``root`` (``<output>/<job>``)."""
        head, _, job = str(root).rstrip("/").rpartition("/")
        return cls(head, job, date, dict(storage_options or {}))

    @classmethod
    def from_url(cls, url: str, storage_options: Mapping[str, Any] | None = None, *,
                 allow_old: bool = False) -> Self | None:
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

    @classmethod
    def every(cls, output: str, job: str, storage_options: Mapping[str, Any] | None = None) -> list[Self]:
        """Every partition of the job that has a state folder, by date (published or not).
        LayoutError if the dataset root holds genpipe 0.1 partitions (:func:`check_layout`)."""
        root = dataset_root(output, job)
        check_layout(root, storage_options)
        dates = sorted(d for d in map(parse_date_dir, _subdirs(join(root, STATE_DIR), storage_options)) if d)
        return [cls.of(output, job, d, storage_options) for d in dates]

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
