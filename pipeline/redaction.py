"""The public form of a job spec: what may be published or printed (manifest.json, the run
report, anything a user sees), with every credential removed by structure, not by field name.

:func:`public_spec` is the one function every publisher of a spec goes through:

* every ``storage_options`` mapping, wherever it sits in the spec (top level, ``dataset.``,
  and any added later), keeps its keys but has every value masked;
* every value found inside any ``storage_options`` is also removed wherever else it appears
  (a key pasted into a URL or a description);
* then :func:`pipeline.publish.storage.redact` on every string: ``scheme://user:pass@`` URL
  credentials, presigned-URL signatures, AWS key ids, secrets registered by earlier storage
  calls and secret-looking environment variables (``AWS_SECRET_ACCESS_KEY``, ``*_TOKEN`` ...).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.publish.storage import MASK, redact_obj

OPTIONS_KEY = "storage_options"
_MIN = 4  # shorter values are not credentials; removing them everywhere would mangle the text


def _leaves(v: Any) -> Iterator[Any]:
    if isinstance(v, Mapping):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, (list, tuple, set)):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


def _masked(v: Any) -> Any:
    """Same shape (mapping keys kept), every leaf value replaced by the mask."""
    if isinstance(v, Mapping):
        return {k: _masked(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_masked(x) for x in v]
    return MASK


def _walk(v: Any, found: set[str]) -> Any:
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if k == OPTIONS_KEY:
                found.update(s for s in _leaves(x) if isinstance(s, str) and len(s) >= _MIN)
                out[k] = _masked(x)
            else:
                out[k] = _walk(x, found)
        return out
    if isinstance(v, (list, tuple)):
        return [_walk(x, found) for x in v]
    return v


def public_obj(obj: Any) -> Any:
    """:func:`public_spec` for any JSON-like data (a dumped spec, a manifest ...)."""
    found: set[str] = set()
    masked = _walk(obj, found)
    return redact_obj(masked, found)


def public_spec(spec: Any) -> dict[str, Any]:
    """The spec (a JobSpec or its dumped dict) as JSON-like data safe to publish or print."""
    d = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
    return public_obj(d)
