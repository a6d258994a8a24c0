"""The YAML half of reading manifests: compose libyaml's nodes into plain data, bounded and located.

We compose YAML nodes ourselves instead of calling ``yaml.safe_load`` so that we can keep line and
column for each field, refuse duplicate keys, and bound the work a hostile file can cause
(alias bombs, deep nesting, huge files). Only ``reconciler.manifests.yamlfile`` imports this module,
and only when a file has to be parsed: a file the parse cache already holds needs no PyYAML at all.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

import yaml

from reconciler.errors import Location, Problem
from reconciler.manifests import yamlfile
from reconciler.manifests.yamlfile import MAX_DEPTH, MAX_NODES_PER_DOCUMENT, FieldPath, Mark

try:  # libyaml is ~10x faster; fall back to the pure-Python composer when it is missing
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]  # types-PyYAML declares libyaml's classes unconditionally

# Implicit tags depend only on (kind, value, implicit) here: safe loading has no path resolvers.
_resolve_tag = lru_cache(maxsize=65_536)(yaml.resolver.Resolver().resolve)


class _Loader(_BaseLoader):
    """libyaml's composer calls back into Python three times per node: to resolve its tag and to
    descend into and ascend from path resolvers, which safe loading does not have. Those calls were
    a fifth of reading 10,000 manifests, so they are replaced by C callables: a memo of the tags
    (keys and short values repeat across thousands of documents) and two no-ops."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # set in the instance's __dict__, where they shadow the methods (the stubs declare those as
        # methods returning None; the composer ignores what the two no-ops return)
        vars(self).update(
            resolve=_resolve_tag,
            descend_resolver=operator.is_,  # (parent, index) -> ignored
            ascend_resolver=tuple,  # () -> ignored
        )


_STR = "tag:yaml.org,2002:str"
_SCALARS = {
    "tag:yaml.org,2002:int": "construct_yaml_int",
    "tag:yaml.org,2002:float": "construct_yaml_float",
    "tag:yaml.org,2002:bool": "construct_yaml_bool",
    "tag:yaml.org,2002:null": "construct_yaml_null",
}
_PLAIN_AS_STRING = {"tag:yaml.org,2002:timestamp"}  # dates stay strings: manifests are JSON-shaped
_constructor = yaml.constructor.SafeConstructor()


class _TooComplex(Exception):
    def __init__(self, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.node = node


def _mark(node: yaml.Node) -> Mark:
    mark = node.start_mark
    return (mark.line, mark.column)


class _Converter:
    """Turns a composed node tree into plain Python data; with ``marks``, also records where each
    field starts (only done when a problem needs a position, see RawDocument)."""

    def __init__(self, file: str, marks: dict[FieldPath, Mark] | None = None, check_text: bool = False) -> None:
        self.file = file
        self.marks = marks
        self.fast_strings = marks is None and not check_text  # see _storable_text
        self.problems: list[Problem] = []
        self.nodes = 0

    def loc(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        return Location(self.file, mark.line + 1, mark.column + 1)

    def _count_children(self, node: yaml.Node, first_child: yaml.Node, children: int, depth: int) -> None:
        """Bound the work (aliases expand the same nodes again) and the nesting, per collection."""
        self.nodes += children
        if self.nodes > MAX_NODES_PER_DOCUMENT:
            raise _TooComplex(
                f"document expands to more than {MAX_NODES_PER_DOCUMENT} YAML nodes (too many aliases or values)",
                node,
            )
        if depth > MAX_DEPTH:
            raise _TooComplex(f"nesting is deeper than {MAX_DEPTH} levels", first_child)

    def convert(self, node: yaml.Node, path: FieldPath, depth: int) -> Any:
        """``node`` sits at ``depth`` and was counted by its parent (the root by the caller)."""
        if node.__class__ is yaml.ScalarNode:  # not through `cls`: the checker narrows only this form
            return self.scalar(node)
        cls = node.__class__
        marks = self.marks
        children = node.value
        if cls is yaml.SequenceNode:
            self._check_tag(node, "tag:yaml.org,2002:seq")
            if not children:
                return []
            self._count_children(node, children[0], len(children), depth + 1)
            return [self._item(child, (*path, i), depth + 1) for i, child in enumerate(children)]
        if cls is yaml.MappingNode:
            self._check_tag(node, "tag:yaml.org,2002:map")
            result: dict[str, Any] = {}
            if not children:
                return result
            self._count_children(node, children[0][1], len(children), depth + 1)
            fast = self.fast_strings
            scalar_node = yaml.ScalarNode
            for key_node, value_node in children:
                if fast and key_node.tag == _STR and key_node.__class__ is scalar_node:
                    key = key_node.value
                else:
                    key = self._key(key_node)
                if key in result:
                    self._duplicate(cast(yaml.MappingNode, node), key_node, key, path)  # cls is MappingNode
                    continue
                if fast and value_node.tag == _STR and value_node.__class__ is scalar_node:
                    result[key] = value_node.value  # the common case, a plain string, inline
                    continue
                child_path = (*path, key)
                if marks is not None:
                    marks[child_path] = _mark(key_node)
                result[key] = self.convert(value_node, child_path, depth + 1)
            return result
        raise _TooComplex(f"unsupported YAML node {type(node).__name__}", node)  # pragma: no cover

    def _item(self, child: yaml.Node, child_path: FieldPath, depth: int) -> Any:
        """A list item: a plain string without further calls (as a mapping's values are, inline)."""
        if self.fast_strings and child.tag == _STR and child.__class__ is yaml.ScalarNode:
            return child.value
        if self.marks is not None:
            self.marks[child_path] = _mark(child)
        return self.convert(child, child_path, depth)

    def _key(self, key_node: yaml.Node) -> str:
        if key_node.tag == _STR and key_node.__class__ is yaml.ScalarNode:
            return key_node.value if self.fast_strings else _storable_text(key_node)
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise _TooComplex("YAML merge keys ('<<') are not supported in manifests", key_node)
        key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            if key is None or isinstance(key, (list, dict)):
                raise _TooComplex("mapping keys must be plain strings", key_node)
            key = str(key)
        return key

    def _duplicate(self, mapping: yaml.MappingNode, key_node: yaml.Node, key: str, path: FieldPath) -> None:
        first = next(k for k, _ in mapping.value if self._key(k) == key)
        self.problems.append(
            Problem(
                f"duplicate key {key!r} (first defined at line {first.start_mark.line + 1})",
                self.loc(key_node),
                field=".".join(str(p) for p in (*path, key)),
                hint="remove one of the two entries; YAML would silently keep only the last",
            )
        )

    def _check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            raise _TooComplex(f"unsupported YAML tag {node.tag!r}", node)

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR or tag in _PLAIN_AS_STRING:
            return _storable_text(node)
        known = _CONSTRUCTED.get((tag, node.value), _CONSTRUCTED)
        if known is not _CONSTRUCTED:
            return known
        method = _SCALARS.get(tag)
        if method is None:
            raise _TooComplex(
                f"unsupported YAML tag {tag!r}; manifests may only hold strings, numbers, booleans, null, lists and mappings",
                node,
            )
        value = getattr(_constructor, method)(node)
        if isinstance(value, float) and not math.isfinite(value):
            raise _TooComplex(f"{node.value!r} is not a finite number (manifests are JSON-shaped: no .inf or .nan)", node)
        if len(_CONSTRUCTED) < _CONSTRUCTED_MAX:
            _CONSTRUCTED[(tag, node.value)] = value
        return value


# (tag, text) -> the number, boolean or null it constructs: the same few values (0, 1, 0.2, false,
# 1024) recur across thousands of documents, and PyYAML constructs each in Python.
_CONSTRUCTED: dict[tuple[str, str], Any] = {}
_CONSTRUCTED_MAX = 65_536


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# the only ways to write those in UTF-8 YAML text: double-quoted escapes
_RISKY_ESCAPE = re.compile(r"\\(?:0|x00|u0000|U00000000|u[dD][89a-fA-F]|U0000[dD][89a-fA-F])")


def _storable_text(node: yaml.ScalarNode) -> str:
    """Refuse text no database or terminal can hold: NUL (PostgreSQL rejects it) and lone
    surrogates (not encodable as UTF-8), both reachable through double-quoted escapes."""
    value: str = node.value
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else f"an unpaired surrogate (U+{ord(bad.group()):04X})"
        raise _TooComplex(f"text contains {what}, which cannot be stored", node)
    return value


def _too_deep(text: str, display: str) -> Problem | None:
    """Find nesting deeper than MAX_DEPTH with the event parser, which does not recurse."""
    starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    loader = _Loader(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None and not isinstance(event, yaml.StreamEndEvent):
            if isinstance(event, starts):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    assert mark is not None  # the parser marks every event it produces
                    return Problem(
                        f"nesting is deeper than {MAX_DEPTH} levels",
                        Location(display, mark.line + 1, mark.column + 1),
                        hint="simplify the document",
                    )
            elif isinstance(event, ends):
                depth -= 1
    except yaml.YAMLError:
        return None  # the composer below reports syntax errors with their location
    finally:
        loader.dispose()
    return None


@lru_cache(maxsize=4)
def _data_in(text: str, display: str) -> dict[int, Any]:
    """The data of every document in a file's text, by document index (see RawDocument.data)."""
    return {index: data for index, data, _, _ in _parse(text, display, [], False)}


@lru_cache(maxsize=4)
def _marks_in(text: str, display: str) -> list[dict[FieldPath, Mark]]:
    """Field positions of every document in a file's text, by document index."""
    out: list[dict[FieldPath, Mark]] = []
    for index, _, _, marks in _parse(text, display, [], True):
        out += [{} for _ in range(index - len(out))]
        out.append(marks)
    return out


def _parse(text: str, display: str, problems: list[Problem], with_marks: bool) -> Iterator[tuple[int, Any, Location, dict[FieldPath, Mark]]]:
    """(index, data, location, marks) of each readable document; problems are appended."""
    loader = _Loader(text)
    index = -1
    check_text = _RISKY_ESCAPE.search(text) is not None
    try:
        while loader.check_node():
            index += 1
            if index >= yamlfile.MAX_DOCUMENTS_PER_FILE:
                problems.append(
                    Problem(
                        f"file has more than {yamlfile.MAX_DOCUMENTS_PER_FILE} documents",
                        Location(display),
                        hint="split it into several files, or raise RECONCILER_MAX_DOCUMENTS",
                    )
                )
                break
            node = loader.get_node()
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
                line = node.start_mark.line + 1 if node is not None else 1
                problems.append(Problem(f"document {index + 1} is empty; skipped", Location(display, line, 1), severity="warning"))
                continue
            converter = _Converter(display, {} if with_marks else None, check_text)
            converter.nodes = 1  # the root
            try:
                data = converter.convert(node, (), 0)
            except _TooComplex as exc:
                problems.append(Problem(str(exc), converter.loc(exc.node), hint="simplify the document"))
                continue
            except (yaml.YAMLError, ValueError, TypeError) as exc:
                problems.append(Problem(f"cannot read value: {exc}", converter.loc(node)))
                continue
            problems.extend(converter.problems)
            yield index, data, converter.loc(node), converter.marks or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(display, mark.line + 1, mark.column + 1) if mark else Location(display)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        problems.append(Problem(f"invalid YAML: {what}", loc, hint="check indentation, quotes and ':' separators"))
    except yaml.reader.ReaderError as exc:  # unmarked: locate it from the character offset
        pos = min(max(exc.position, 0), len(text))
        loc = Location(display, text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos))
        problems.append(Problem(f"invalid YAML: {exc.reason} (character {exc.character!r})", loc, hint="remove the character"))
    except yaml.YAMLError as exc:
        problems.append(Problem(f"invalid YAML: {exc}", Location(display)))
    except RecursionError:
        problems.append(Problem("invalid YAML: nesting too deep to parse", Location(display)))
    finally:
        loader.dispose()
    if index == -1 and not problems:
        problems.append(Problem("file is empty; skipped", Location(display), severity="warning"))
