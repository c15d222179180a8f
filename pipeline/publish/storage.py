"""Storage: every location is an fsspec URL (plain path, ``file://``, ``s3://``, ``gs://``, ``memory://``).

Also the two habits every storage call in the project shares:

* **no credentials in text**: :func:`redact` strips secrets (storage_options values under
  key/secret/token/password-like keys, secret-looking environment variables such as
  ``AWS_SECRET_ACCESS_KEY``, ``user:pass@`` in URLs, presigned-URL signatures) from any message,
  and :func:`storage_errors` re-raises storage exceptions with a redacted message. Secrets seen
  by :func:`url_to_fs` are remembered for the life of the process, so a later plain
  ``redact(msg)`` (e.g. in the CLI) removes them too;
* **bounded retries**: :func:`with_retries` retries transient errors (network, throttling) with
  exponential backoff and jitter, and never retries permanent ones (missing file, permission,
  already exists, bad argument).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import fsspec

from pipeline.errors import EXIT_FAILED, GenpipeError

log = logging.getLogger(__name__)
T = TypeVar("T")

MASK = "***"
#: storage_options keys whose values are credentials (matched anywhere in the key, case-insensitive)
_SECRET_KEY = re.compile(
    r"(?i)(secret|token|passw|pwd|credential|api[_-]?key|access[_-]?key|account[_-]?key|private[_-]?key"
    r"|^key$|sas|signature|connection[_-]?string|session)"
)
#: environment variables that hold credentials (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, ...)
_SECRET_ENV = re.compile(r"(?i)(secret|token|passw|credential|access_key|api_key|private_key)")
#: ``scheme://user:pass@`` (the user of an object-store URL is an access key id; a pasted secret
#: may hold ``/``) and ``scheme://token@``: both parts are masked
_URL_USERINFO = re.compile(r"""(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s:@]+):([^\s@"'<>]+)@""")
_URL_USER = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s:@]+)@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|token|access_token"
    r"|password)=)[^&\s\"']+"
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_MIN_SECRET = 4  # shorter values are not credentials; masking them would mangle every message
_MIN_ENV_SECRET = 8  # env vars are not chosen by us: only mask values long enough to be real secrets
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no"}

_known: set[str] = set()
_known_lock = threading.Lock()

#: permanent failures: retrying cannot help
PERMANENT: tuple[type[BaseException], ...] = (
    FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError,
    ValueError, TypeError, NotImplementedError,
)
#: OSError errnos that are permanent even when the class is a plain OSError
_PERMANENT_ERRNO = {errno.EINVAL, errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG, errno.EDQUOT, errno.ENOTDIR}
TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)
#: transport errors of object-store clients that are not OSErrors: botocore's (s3fs raises them
#: untranslated once its own and botocore's retries are spent: EndpointConnectionError,
#: ConnectionClosedError, Connect/ReadTimeoutError) and aiohttp's (gcsfs, adlfs, http).
#: ``module:Class``, looked up only in modules already imported (see :func:`client_transient`).
CLIENT_TRANSIENT = (
    "botocore.exceptions:ConnectionError", "botocore.exceptions:HTTPClientError",
    "aiohttp.client_exceptions:ClientConnectionError", "aiohttp.client_exceptions:ClientPayloadError",
)


class SafeMessage(Exception):  # noqa: N818 - a marker, not an error of its own
    """Marker for our own exceptions whose message is already free of credentials:
    :func:`storage_errors` lets them through unchanged."""


class StorageError(GenpipeError, OSError, SafeMessage):
    """A storage operation failed; the message names the location with credentials removed.
    Exit code 1: the job ran and failed (an unreachable store raises ConnectionError, exit 3)."""

    exit_code = EXIT_FAILED
    name_in_message = True


# ------------------------------------------------------------------------------------------ secrets


def secrets_of(options: Mapping[str, Any] | None) -> set[str]:
    """Credential values inside (possibly nested) storage_options."""
    out: set[str] = set()

    def leaves(v: Any) -> Iterator[str]:
        if isinstance(v, str):
            yield v
        elif isinstance(v, Mapping):
            for x in v.values():
                yield from leaves(x)
        elif isinstance(v, (list, tuple, set)):
            for x in v:
                yield from leaves(x)

    def walk(v: Any) -> None:
        if isinstance(v, Mapping):
            for k, x in v.items():
                if isinstance(k, str) and _SECRET_KEY.search(k):
                    out.update(leaves(x))
                else:
                    walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(options or {})
    return {s for s in out if _is_secret(s)}


def _is_secret(s: str) -> bool:
    return len(s) >= _MIN_SECRET and s.lower() not in _NOT_SECRETS


def env_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of secret-looking environment variables (AWS_SECRET_ACCESS_KEY, *_TOKEN, ...)."""
    env = os.environ if environ is None else environ
    return {v for k, v in env.items() if _SECRET_ENV.search(k) and _is_secret(v) and len(v) >= _MIN_ENV_SECRET}


def register_secrets(options: Mapping[str, Any] | Iterable[str] | None) -> None:
    """Remember credentials so that every later :func:`redact` call removes them."""
    found = secrets_of(options) if isinstance(options, Mapping) else {s for s in options or () if _is_secret(s)}
    if found:
        with _known_lock:
            _known.update(found)


def redact(text: str, secrets: Iterable[str] | Mapping[str, Any] = ()) -> str:
    """``text`` without credentials.

    Removes: the given ``secrets`` (strings, or a storage_options mapping to take them from),
    secrets registered by :func:`url_to_fs`, secret-looking environment variables, the user and
    password of ``scheme://user:pass@host`` URLs (and ``scheme://token@host``), presigned-URL
    signatures and AWS access key ids.
    """
    text = str(text)
    given = secrets_of(secrets) if isinstance(secrets, Mapping) else {s for s in secrets if _is_secret(s)}
    with _known_lock:
        every = given | _known
    every |= env_secrets()
    for s in sorted(every, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}:{MASK}@", text)
    text = _URL_USER.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return _AWS_KEY_ID.sub(MASK, text)


def redact_obj(obj: Any, secrets: Iterable[str] | Mapping[str, Any] = ()) -> Any:
    """:func:`redact` applied to every string (keys too) inside JSON-like data."""
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, Mapping):
        return {redact(str(k), secrets): redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, secrets) for v in obj]
    return obj


def _copy_exc(exc: BaseException, msg: str) -> BaseException:
    for cls in (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
                TimeoutError):
        if isinstance(exc, cls):
            return cls(msg)
    if isinstance(exc, (ValueError, TypeError)):
        return ValueError(msg)
    return StorageError(msg)


@contextlib.contextmanager
def storage_errors(what: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Re-raise any storage exception as one with a redacted message prefixed by ``what``.

    The class family is kept (FileNotFoundError stays FileNotFoundError, ...); anything else
    becomes :class:`StorageError`. The original is not chained (its text may hold secrets).
    """
    try:
        yield
    except (SafeMessage, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - storage backends raise anything
        detail = redact(f"{type(exc).__name__}: {exc}", storage_options or {})
        raise _copy_exc(exc, f"{redact(what, storage_options or {})}: {detail}") from None


# --------------------------------------------------------------------------------------------- URLs


def url_to_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for any fsspec URL or plain local path."""
    so = dict(storage_options or {})
    register_secrets(so)
    try:
        return fsspec.core.url_to_fs(str(url), **so)
    except (ImportError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot open {redact(str(url), so)}: {redact(str(exc), so)}") from None


def protocol_of(fs: fsspec.AbstractFileSystem) -> str:
    """The filesystem's main protocol name (``file``, ``s3``, ``memory`` ...)."""
    p = fs.protocol
    return p[0] if isinstance(p, (tuple, list)) else p


def join(url: str, *parts: str) -> str:
    """``url`` and ``parts`` joined by ``/`` (works for URLs and plain paths; no normalisation)."""
    out = str(url)
    for p in parts:
        p = str(p).strip("/")
        if not p:
            continue
        out = p if not out else (out + p if out.endswith("/") else f"{out}/{p}")
    return out


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` / ``local://`` URLs."""
    url = str(url)
    if "::" in url:  # chained URLs (simplecache::s3://...) are remote
        return False
    if "://" not in url:
        return True
    return url.split("://", 1)[0].lower() in ("file", "local")


def safe_join(root_url: str, rel: str) -> str:
    """``root_url/rel`` where ``rel`` is a relative path that stays below the root.

    Refuses (ValueError naming the path) empty, absolute, URL, drive-letter, backslash, NUL
    and ``..`` paths, so a manifest or a user argument can never point outside the root.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise ValueError(f"unsafe path {rel!r}: empty")
    if "\x00" in rel or "\\" in rel:
        raise ValueError(f"unsafe path {rel!r}: contains a NUL or a backslash")
    if rel.startswith("/") or "://" in rel or re.match(r"^[A-Za-z]:", rel) or rel.startswith("~"):
        raise ValueError(f"unsafe path {rel!r}: absolute paths and URLs are not allowed")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"unsafe path {rel!r}: '..' would escape the root")
    if not parts:
        raise ValueError(f"unsafe path {rel!r}: names the root itself")
    return join(root_url, *parts)


# ------------------------------------------------------------------------------------------ retries


def is_permanent(exc: BaseException, permanent: tuple[type[BaseException], ...] = PERMANENT) -> bool:
    """Whether retrying ``exc`` is pointless."""
    if isinstance(exc, permanent):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.errno in _PERMANENT_ERRNO


def loaded_classes(*names: str) -> tuple[type[BaseException], ...]:
    """Exception classes named ``module:Class``, taken only from modules already imported: an
    exception of a module never imported cannot have been raised, and importing one just to
    compare (botocore, torch) would cost every caller."""
    out = []
    for name in names:
        mod, _, cls = name.partition(":")
        m = sys.modules.get(mod)
        if m is not None and isinstance(getattr(m, cls, None), type):
            out.append(getattr(m, cls))
    return tuple(out)


def client_transient() -> tuple[type[BaseException], ...]:
    """The :data:`CLIENT_TRANSIENT` classes whose modules are loaded."""
    return loaded_classes(*CLIENT_TRANSIENT)


def is_transient(exc: BaseException, retry_on: tuple[type[BaseException], ...] = TRANSIENT,
                 permanent: tuple[type[BaseException], ...] = PERMANENT) -> bool:
    """Whether ``exc`` may go away on a retry: network, timeouts, throttling, 5xx (s3fs turns
    those into OSError), and the clients' own transport errors."""
    if is_permanent(exc, permanent):
        return False
    return isinstance(exc, retry_on) or isinstance(exc, client_transient())


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT,
    permanent: tuple[type[BaseException], ...] = PERMANENT,
    what: str = "storage operation",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, retried on transient errors at most ``attempts`` times in all.

    Delays grow as ``base_delay * 2**k`` capped at ``max_delay``, with "equal jitter" (half
    fixed, half random) so that many actors retrying together spread out. Exceptions in
    ``permanent`` (and OSErrors with a permanent errno such as EINVAL/ENOSPC) are raised at
    once; the last transient error is raised when the attempts are used up.

    Transient = ``retry_on`` plus the object-store clients' transport errors
    (:data:`CLIENT_TRANSIENT`). This layer sits on top of the client's own retries (botocore
    retries a refused connection for ~5 s; s3fs retries cut requests and timeouts, but not a
    refused connection): it carries an operation through an outage as long as the sum of its
    delays (1.5-3 s with the defaults) on top of the client's own, then gives up.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for k in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc, retry_on, permanent) or k == attempts - 1:
                raise
            cap = min(max_delay, base_delay * (2**k))
            delay = cap / 2 + random.uniform(0, cap / 2)
            log.warning("%s failed (%s), retry %d/%d in %.2fs", what,
                        redact(f"{type(exc).__name__}: {exc}"), k + 1, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
