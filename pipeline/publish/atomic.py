"""Two atomic writes, on any fsspec filesystem: create-only and replace.

create-only (:func:`put_create_only`) is what makes a shard commit exactly-once: the first
complete writer wins and every later one gets ``FileExistsError`` (then verifies and accepts
the winner's file). No reader ever sees a partial file.

=================  ==========================================================================
local disk         write ``<staging>/<name>.<uuid>``, fsync, then ``os.link`` it to the
                   final name (atomic, fails if the name exists), fsync the directory. Where
                   hard links are not supported, check-then-``os.replace`` (a tiny race
                   between two writers of the same deterministic shard; either file is whole).
s3 / s3a           one object written with mode ``"xb"``: s3fs sends ``If-None-Match: *`` on
                   the PUT (or on CompleteMultipartUpload) and turns HTTP 412 into
                   FileExistsError. AWS S3 and moto honour it.
memory             ``"xb"`` (checked under the GIL in one process).
anything else      emulated: exists? -> write a temp key under ``.staging/`` -> exists again?
(gs, az, ...)      -> move into place. Not atomic against a concurrent writer of the same
                   key; the committed shard's footer is verified afterwards and a duplicate
                   writer's bytes are identical (shards are deterministic), so at worst the
                   same file is written twice.
=================  ==========================================================================

replace (:func:`put_replace`, for the manifest, run state, report and dataset card): local
``os.replace`` from the staging folder (which replaces a symbolic link at the target rather than
writing through it); on object stores one whole-object PUT, which is atomic (readers see the old
or the new object).

The staging folder is the partition's ``_genpipe/logical_date=D/staging/`` (outside every
reader's data glob, on the same filesystem as the data folder, so a hard link works). A temp
file whose write fails (disk full) is removed at once; :meth:`Partition.clean_staging` removes
what a killed process left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import uuid

import fsspec

from pipeline.publish.storage import join, protocol_of

NATIVE_CREATE_ONLY = {"s3", "s3a", "memory"}
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}
_NO_HARDLINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    return protocol_of(fs) in ("file", "local")


def _tmp_name(path: str) -> str:
    return f"{posixpath.basename(path)}.{uuid.uuid4().hex}"


def _fsync_dir(d: str) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows opening a directory
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_local_tmp(path: str, data: bytes, staging: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = os.path.join(staging, _tmp_name(path))
    for attempt in range(3):  # a cleanup elsewhere may remove an empty staging dir under us
        os.makedirs(staging, exist_ok=True)
        try:
            f = open(tmp, "xb")
        except FileNotFoundError:
            if attempt == 2:
                raise
            continue
        try:
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # disk full, I/O error, interrupt: never leave a partial temp file behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp
    raise AssertionError("unreachable")  # pragma: no cover


def _local_create_only(path: str, data: bytes, staging: str) -> None:
    if os.path.exists(path):  # cheap early exit; the link below is the real check
        raise FileExistsError(path)
    tmp = _write_local_tmp(path, data, staging)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            if os.path.exists(path):
                raise FileExistsError(path) from None
            os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def _ensure_parent(fs: fsspec.AbstractFileSystem, path: str) -> None:
    # object stores have no directories (and s3fs.makedirs may try to create a bucket)
    if protocol_of(fs) not in OBJECT_STORES and _parent(path):
        fs.makedirs(_parent(path), exist_ok=True)


def put_create_only(fs: fsspec.AbstractFileSystem, path: str, data: bytes, staging: str) -> None:
    """Write ``data`` at ``path`` only if nothing is there; else FileExistsError.

    ``staging`` is a directory next to ``path`` for temporary files (local disk, emulation).
    """
    if is_local_fs(fs):
        _local_create_only(path, data, staging)
    elif protocol_of(fs) in NATIVE_CREATE_ONLY:
        _ensure_parent(fs, path)
        with fs.open(path, "xb") as f:
            f.write(data)
    else:
        _emulated_create_only(fs, path, data, staging)
    fs.invalidate_cache(path)


def _emulated_create_only(fs: fsspec.AbstractFileSystem, path: str, data: bytes, staging: str) -> None:
    fs.invalidate_cache(path)
    if fs.exists(path):
        raise FileExistsError(path)
    tmp = join(staging, _tmp_name(path))
    _ensure_parent(fs, tmp)
    fs.pipe_file(tmp, data)
    try:
        fs.invalidate_cache(path)
        if fs.exists(path):
            raise FileExistsError(path)
        _ensure_parent(fs, path)
        fs.mv(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError, OSError):
            if fs.exists(tmp):
                fs.rm_file(tmp)


def put_replace(fs: fsspec.AbstractFileSystem, path: str, data: bytes, staging: str) -> None:
    """Write ``data`` at ``path`` atomically, replacing what is there."""
    if is_local_fs(fs):
        tmp = _write_local_tmp(path, data, staging)
        try:
            os.replace(tmp, path)
            _fsync_dir(os.path.dirname(path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    else:
        _ensure_parent(fs, path)
        fs.pipe_file(path, data)  # one whole-object PUT: atomic on object stores
    fs.invalidate_cache(path)


def remove_empty_dir(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Remove ``path`` if it is an empty local directory (best effort, never raises)."""
    if is_local_fs(fs):
        with contextlib.suppress(OSError):
            os.rmdir(path)
