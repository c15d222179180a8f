"""Reading a job spec's YAML as data, and nothing more.

``yaml.safe_load`` already refuses tags that build objects, but a hostile or careless file can
still hurt: a 525-byte alias bomb (``a: &a [x, x]``, ``b: &b [*a, *a]`` ...) expands to gigabytes
once anything walks it, a repeated key (two ``train:`` blocks) silently replaces the first, and
deep nesting or a 5,000-digit number raises from deep inside the parser. :func:`load_yaml`
refuses all of these with a ``yaml.YAMLError`` that carries the line and column:

* anchors, aliases and merge keys (``&a``, ``*a``, ``<<:``): a job spec has no use for them;
* a key given twice in one mapping;
* nesting deeper than :data:`MAX_DEPTH`;
* a file larger than :data:`MAX_BYTES` (checked by the caller, :func:`pipeline.spec.load_spec`).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_DEPTH = 32
MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped spec is ~2 KB
_MERGE_TAG = "tag:yaml.org,2002:merge"


class SpecLoader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases, merge keys or repeated keys, and with a depth cap."""

    _depth = 0
    _mark: Any = None  # the node being constructed: where a constructor's own failure points

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        self._mark = node.start_mark
        return super().construct_object(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not allowed in a job spec: "
                                "write the value out", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, f"YAML anchors (&{event.anchor}) are not allowed in a job spec",
                                event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep=deep)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                raise ConstructorError(None, None, "YAML merge keys (<<) are not allowed in a job spec",
                                       key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the base class says so, with its mark
                break
            if first is not None:
                raise ConstructorError(None, None, f"key {key!r} is given twice (first on line {first.line + 1})",
                                       key_node.start_mark)
            seen[key] = key_node.start_mark
        # no merge keys are left, so SafeConstructor's flatten_mapping has nothing to do
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse one YAML document as plain data. Raises ``yaml.YAMLError`` (with a mark where
    there is one) for anything malformed or refused above, never another exception type."""
    loader = SpecLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # a constructor's own failure: a timestamp like 2026-13-01, an int of 5,000 digits
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConstructorError(None, None, problem, loader._mark) from None
    finally:
        loader.dispose()
