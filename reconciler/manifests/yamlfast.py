"""A faster read of plain manifest files: yaml_rs (Rust, YAML 1.2) for files whose text provably
means the same to it as to libyaml, ``yamlparse`` (the reference) for every other file.

yaml_rs builds the Python data in Rust, four times faster than libyaml's composer and our
converter. It resolves plain scalars by YAML 1.2 (``yes`` is text, ``010`` is ten, ``1e5`` a
number) and reports no positions, so it is used only for a file whose every line outside block
scalars (``_outside_block_scalars``: their lines are text to both) passes a cheap check
(``_lines_ok``): printable text, block style or one-line flow collections of words (``_flow_ok``),
no anchors, aliases, tags, directives, complex keys or double-quoted escapes, shallow indentation,
every document a mapping after a ``---`` line, and every word that could be a plain scalar or a
key (the last word of a line, the key before ``:``, a flow's words) read alike by both
(``_agree``, asked of yaml_rs itself and of PyYAML's resolver). Anything else, and anything yaml_rs refuses, returns None: the caller then
parses the file with libyaml, which gives every message and every position as before. Where the
two were found to differ (an empty block scalar or one without a final line break at the end of
the text, lines of spaces in a block) the file goes to libyaml too; tests/test_yamlfast.py
compares the two on generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import yaml

from reconciler.errors import Location
from reconciler.manifests import yamlfile
from reconciler.manifests.yamlparse import _STR, _Converter, _resolve_tag, _TooComplex

try:
    import yaml_rs
except ImportError:  # pragma: no cover - a core dependency; without it every file goes to libyaml
    yaml_rs = None  # type: ignore[assignment]

_TIMESTAMP = "tag:yaml.org,2002:timestamp"  # read as text by yamlparse (_PLAIN_AS_STRING)
# what may not start a line's content or a key's value here: anchors, aliases, tags, directives,
# reserved characters, flow collections, complex keys and bare values; '|'/'>' only as these
_BAD_START = frozenset("&*!%@`[]{},?:|>")
_NOT_A_KEY = frozenset(["", " ", "#", "\n", "-"])  # what _roots looks at more closely
_BLOCK_INDICATORS = frozenset({"|", "|-", "|+", ">", ">-", ">+"})
_QUOTES = frozenset("'\"")
# a word starting with another ASCII letter, or longer than "Infinity", is text in both schemas
_MAYBE_NOT_TEXT = frozenset("nNyYtTfFoOiI")
_TEXT_START = frozenset(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in _MAYBE_NOT_TEXT)
# the deepest content column: two levels per column at most (a sequence may sit at its key's
# column), so the nesting stays below MAX_DEPTH and far below what yaml_rs recurses through
_MAX_COLUMN = yamlfile.MAX_DEPTH // 2 - 3
# a document counts fewer nodes than twice its characters: without flow collections and aliases
# every node but a collection takes a character, and every collection but the root a key or '-'
_MAX_DOCUMENT_CHARS = yamlfile.MAX_NODES_PER_DOCUMENT // 2

# the words asked about, and those the two parsers read apart as a plain value / key (per process)
_ASKED: set[str] = set()
_UNLIKE_VALUE: set[str] = set()
_UNLIKE_KEY: set[str] = set()


def _needs_asking(word: str) -> bool:
    c = word[0]
    return not (c.isascii() and c.isalpha()) or (c in _MAYBE_NOT_TEXT and len(word) <= 8)


def _value_needs_asking(word: str) -> bool:
    """As _needs_asking, but a decimal integer without a leading zero is that integer in both."""
    if len(word) <= 18 and word.isdigit() and word.isascii() and (word[0] != "0" or len(word) == 1):
        return False  # (a longer one is asked: Python refuses to read more than 4,300 digits)
    return _needs_asking(word)


def _lines_ok(lines: Iterable[str], values: set[str], keys: set[str]) -> bool:
    """Whether every line is of the plain kind both parsers read alike; collects the words to ask
    about. A line inside a block scalar or a quoted text is checked as if it were structure: that
    only sends more files to libyaml."""
    bad_start, quotes, blocks, max_column = _BAD_START, _QUOTES, _BLOCK_INDICATORS, _MAX_COLUMN
    add_value, add_key = values.add, keys.add
    for line in lines:
        if not line.isprintable():  # control characters, tabs, CR, BOM, Unicode line breaks and spaces
            return False
        s = line.lstrip(" ")
        if not s or s[0] == "#":
            continue
        column = len(line) - len(s)
        if " #" in s:
            s = s[: s.index(" #")]
        s = s.rstrip(" ")
        first = s[0]
        if first == "-":
            if s == "-":
                continue
            if s[1] == " ":
                s = s[2:].lstrip(" ")
                column += 2
                first = s[0]
                if first == "-" and (s == "-" or s[1] == " "):
                    return False  # a sequence in a sequence on one line
            elif column == 0 and s.startswith("---") and (len(s) == 3 or s[3] == " "):
                continue  # a document marker, checked by _roots
        elif first == "." and column == 0 and s.startswith("...") and (len(s) == 3 or s[3] == " "):
            continue  # a document end: _roots refuses it
        if column > max_column:
            return False
        if first in bad_start:
            if s not in blocks and not (first in "[{" and _flow_ok(s, add_value, add_key)):
                return False
            continue
        head, sep, value = s.partition(": ")
        if sep:
            if first not in quotes and " " not in head:
                add_key(head)
            value = value.lstrip(" ")
            if not value:
                continue
            first = value[0]
            if first in bad_start:
                if value not in blocks and not (first in "[{" and _flow_ok(value, add_value, add_key)):
                    return False
                continue
            if first == "-" and (value == "-" or value[1] == " "):
                return False
        elif s[-1] == ":":
            if first not in quotes and " " not in s:
                add_key(s[:-1])
            continue
        else:
            value = s
        last = value[value.rfind(" ") + 1 :]
        if last[0] not in bad_start and last[0] not in quotes:  # else inside a longer or quoted text
            add_value(last)
    return True


# a flow collection's pieces: an indicator, a quoted text without escapes, or a plain word (no
# ':' in it: libyaml ends a plain scalar at any ':' in a flow, YAML 1.2 only at ': '), then ': '
# after a key
_FLOW_TOKEN = re.compile(r""" *(?:([\[\]{},])|'([^'\n]*)'|"([^"\\\n]*)"|([^\s,\[\]{}:#'"&*!|>%@`?-][^\s,\[\]{}:#'"]*))(: )?""")
_MAX_FLOW_DEPTH = 3  # with the block levels (see _MAX_COLUMN), still within MAX_DEPTH


def _flow_ok(text: str, add_value: Callable[[str], None], add_key: Callable[[str], None]) -> bool:
    """Whether ``text`` is one whole flow collection of the simplest kind (on one line; items and
    values plain words, quoted texts or such collections; keys words or quoted texts followed by
    ': '; no empty entries): what both parsers read alike once its words are (collected)."""
    stack: list[str] = []
    expect = "value"  # what may come next: value, item, key, sep(arator or end)
    pos = 0
    while pos < len(text):
        m = _FLOW_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return False
        pos = m.end()
        mark, _, _, word, colon = m.groups()
        if mark is not None:
            if colon:
                return False  # a collection as a key
            if mark in "[{":
                if expect not in ("value", "item", "first"):
                    return False
                stack.append(mark)
                if len(stack) > _MAX_FLOW_DEPTH:
                    return False
                expect = "first" if mark == "[" else "first key"
            elif mark == ",":
                if expect != "sep":
                    return False
                expect = "item" if stack[-1] == "[" else "key"
            else:
                if not stack or "[{"["]}".index(mark)] != stack.pop() or expect not in ("sep", "first", "first key"):
                    return False
                expect = "sep" if stack else "end"
        elif expect in ("key", "first key"):
            if not colon:
                return False
            if word is not None:
                add_key(word)
            expect = "value"
        elif expect in ("value", "item", "first") and not colon and stack:
            if word is not None:
                add_value(word)
            expect = "sep"
        else:
            return False
    return expect == "end"


def _pyyaml_value(word: str) -> tuple[bool, Any]:
    """What libyaml and yamlparse make of ``word`` as a plain scalar: (readable, value)."""
    tag = _resolve_tag(yaml.ScalarNode, word, (True, False))
    if tag == _STR or tag == _TIMESTAMP:
        return True, word
    try:
        return True, _Converter("").scalar(yaml.ScalarNode(tag, word))
    except (_TooComplex, yaml.YAMLError, ValueError, TypeError, OverflowError):  # merge keys, '=', .inf: not alike
        return False, None


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b and (type(a) is not float or repr(a) == repr(b))


_REFUSED: Any = object()


def _yaml_rs_loads(text: str) -> Any:
    """yaml_rs's data for ``text``, or _REFUSED whatever it raises."""
    assert yaml_rs is not None
    try:
        return yaml_rs.loads(text, parse_datetime=False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - a syntax error, a duplicate key, even a Rust panic: libyaml tells
        return _REFUSED


def _ask_yaml_rs(words: list[str]) -> list[tuple[bool, Any]]:
    """yaml_rs's reading of each word as a plain scalar in a block sequence."""
    read = _yaml_rs_loads("".join(f"- {w}\n" for w in words))
    if isinstance(read, list) and len(read) == len(words):
        return [(True, v) for v in read]
    # one word it refuses (or reads as more than one item): ask one by one
    if len(words) == 1:
        return [(False, None)]
    return [r for w in words for r in _ask_yaml_rs([w])]


def _agree(values: set[str], keys: set[str]) -> bool:
    """Whether every word reads alike in both parsers: as a value the same type and value, as a
    key the same text (yamlparse turns a non-text key into text; yaml_rs keeps it a number)."""
    text_start = _TEXT_START
    new_values = [w for w in values - _ASKED if w[0] not in text_start and _value_needs_asking(w)]
    new_keys = [w for w in keys - _ASKED if _needs_asking(w)]
    if new_values or new_keys:
        asked = list(dict.fromkeys(new_values + new_keys))
        for word, (rs_ok, rs) in zip(asked, _ask_yaml_rs(asked), strict=True):
            py_ok, py = _pyyaml_value(word)
            if not (rs_ok and py_ok and _same(py, rs)):
                _UNLIKE_VALUE.add(word)
                _UNLIKE_KEY.add(word)
            elif py != word:
                _UNLIKE_KEY.add(word)
        _ASKED.update(asked)
    return values.isdisjoint(_UNLIKE_VALUE) and keys.isdisjoint(_UNLIKE_KEY)


def _roots(text: str) -> list[tuple[int, int]] | None:
    """(line, column) of each document's root mapping, 0-based, or None when a document is empty,
    starts on its marker's line, is not a mapping, is too long, or a '...' marker ends one."""
    markers = yamlfile._document_markers(text)
    roots: list[tuple[int, int]] = []
    line, counted = 0, 0
    count = text.count
    for number, (start, end) in enumerate(zip([0, *markers], [*markers, len(text)], strict=True)):
        if end - start > _MAX_DOCUMENT_CHARS:
            return None
        pos = start
        if number:  # after a marker: nothing on its line but a comment
            if text[start] == ".":
                return None
            if text[start + 3 : start + 4] == "\n" and text[start + 4 : start + 5] not in _NOT_A_KEY:
                pos = start + 4  # the common case: a key at the start of the next line
                line += count("\n", counted, pos)
                counted = pos
                roots.append((line, 0))
                continue
            eol = text.find("\n", start, end)
            rest = text[start + 3 : end if eol == -1 else eol].strip(" ")
            if rest and rest[0] != "#":
                return None
            pos = end if eol == -1 else eol + 1
        while pos < end:
            eol = text.find("\n", pos, end)
            eol = end if eol == -1 else eol
            s = text[pos:eol].lstrip(" ")
            if s and s[0] != "#":
                break
            pos = eol + 1
        else:
            if number:
                return None  # an empty document: libyaml warns about it
            continue  # comments or nothing before the first marker: no document
        if s[0] == "-" and (len(s) == 1 or s[1] == " "):
            return None  # a sequence
        line += count("\n", counted, pos)
        counted = pos
        roots.append((line, eol - pos - len(s)))
    return roots


@lru_cache(maxsize=256)
def _dedent_below(columns: int) -> re.Pattern[str]:
    """A line break followed by a line holding more than spaces, indented by at most ``columns``."""
    return re.compile(rf"\n {{0,{columns}}}(?=[^ \n])")


@lru_cache(maxsize=256)
def _spaces_beyond(columns: int) -> re.Pattern[str]:
    """A line of nothing but more than ``columns`` spaces (where the 1.1 and 1.2 rules differ)."""
    return re.compile(rf"\n {{{columns + 1},}}(?=\n)")


def _outside_block_scalars(text: str) -> list[str] | None:
    """The text without the contents of its block scalars (``key: |`` and the lines indented
    below it), which both parsers read as text: only printable characters are asked of them. None
    when a block's lines are indented less than its first line, or a line of spaces is longer
    (libyaml and yaml_rs differ there)."""
    headers = _header_ends(text)
    pieces: list[str] = []
    done = 0  # text before this is in pieces or in a block
    for at in headers:
        if at < done:
            continue  # a header-like line inside a block
        start = text.rfind("\n", 0, at) + 1
        line = text[start : text.index("\n", at)]
        if "#" in line or "'" in line or '"' in line:
            continue  # not a header we read (its lines stay structure, checked as such)
        content = line.lstrip(" ")
        if " " not in content:
            continue  # a lone indicator: its lines stay structure
        before = content[: content.rindex(" ")].rstrip(" ")  # what precedes the indicator
        column = len(line) - len(content)  # of the collection the block scalar is in
        if before != "-":
            key = before[1:].lstrip(" ") if before.startswith("- ") else before
            if not key.endswith(":") or " " in key or key.startswith("-"):
                continue
            column += len(before) - len(key)
        body = text.index("\n", at) + 1
        end = _dedent_below(column).search(text, body - 1)
        stop = len(text) if end is None else end.start() + 1
        block = text[body:stop]
        if not block.strip(" \n"):
            continue  # empty: its blank lines are harmless as structure
        first = len(block) - len(block.lstrip(" \n"))
        indent = first - (block.rfind("\n", 0, first) + 1)
        if _dedent_below(indent - 1).search(text, body - 1, stop) or _spaces_beyond(indent).search("\n" + block):
            return None
        if not block.replace("\n", "").isprintable():
            return None
        pieces.append(text[done:body])
        done = stop
    pieces.append(text[done:])
    return pieces


def _header_ends(text: str) -> list[int]:
    """Where ' |', ' >' (with '-' or '+') end a line: the two characters are rare, found by memchr."""
    found = []
    for indicator in "|>":
        i = text.find(indicator)
        while i != -1:
            after = text[i + 1 : i + 3]
            if text[i - 1 : i] == " " and (after[:1] == "\n" or after in ("-\n", "+\n")):
                found.append(i - 1)
            i = text.find(indicator, i + 1)
    return sorted(found)


def parse_plain(text: str, display: str) -> list[tuple[Any, Location]] | None:
    """Each document's data and root location, exactly as ``yamlparse._parse`` gives them for a
    file it finds no problem in; None when the file must go to libyaml."""
    if yaml_rs is None:
        return None
    if not text.endswith("\n") and ("|" in text or ">" in text):
        return None  # yaml_rs ends a block scalar at the end of the text with a line break
    tail = text.rstrip(" \n")
    tail = tail[tail.rfind("\n") + 1 :].partition(" #")[0].rstrip(" ")
    if tail[-2:].lstrip(" :-") in _BLOCK_INDICATORS or tail[-1:] in _BLOCK_INDICATORS:
        return None  # an empty block scalar last: libyaml reads '', yaml_rs a line break
    pieces = _outside_block_scalars(text)
    if pieces is None:
        return None
    structure = "\n".join(pieces)
    if '"' in structure and "\\" in structure:
        return None  # double-quoted escapes: NUL, surrogates, \N...
    lines = set(structure.split("\n"))
    values: set[str] = set()
    keys: set[str] = set()
    if not _lines_ok(lines, values, keys):
        return None
    roots = _roots(text)
    if not roots or len(roots) > yamlfile.MAX_DOCUMENTS_PER_FILE:
        return None
    if not _agree(values, keys):
        return None
    read = _yaml_rs_loads(text)  # duplicate keys raise
    if read is _REFUSED:
        return None
    documents = read if len(roots) > 1 else [read]
    if not isinstance(documents, list) or len(documents) != len(roots) or not all(type(d) is dict for d in documents):
        return None
    return [(data, Location(display, line + 1, column + 1)) for data, (line, column) in zip(documents, roots, strict=True)]
