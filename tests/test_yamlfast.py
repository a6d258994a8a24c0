"""yaml_rs's fast path gives, for every file it takes, exactly what libyaml's path gives (values,
types, key order, documents, locations, no problems), and leaves every other file to libyaml.

The reference is ``yamlparse._parse``. The texts: the benchmark's workload, the quick start,
the examples, every YAML file under tests/, documents PyYAML dumps from random data, and
documents built from a seeded grammar of block YAML with scalars from the whole resolution table
(YAML 1.1 booleans, octal/hex/binary/sexagesimal integers, exponents, .inf/.nan, timestamps,
nulls, quoted and plain, block scalars with chomping), then randomly damaged."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.errors import Location, Problem
from reconciler.manifests import yamlfast, yamlfile
from reconciler.manifests.yamlfast import parse_plain
from reconciler.manifests.yamlparse import _parse

REPO = Path(__file__).resolve().parents[1]


def _reference(text: str) -> tuple[list[tuple[str, Location]], list[Problem]]:
    problems: list[Problem] = []
    documents = [(repr(data), location) for _, data, location, _ in _parse(text, "t.yaml", problems, False)]
    return documents, problems


def _check(text: str) -> bool:
    """Whether the fast path took ``text``; when it did, its result is libyaml's."""
    fast = parse_plain(text, "t.yaml")
    if fast is None:
        return False
    documents, problems = _reference(text)
    assert problems == [], (text, problems)
    # repr tells 1 from True from 1.0 from '1', -0.0 from 0.0, and shows the keys' order
    assert [(repr(data), location) for data, location in fast] == documents, text
    return True


# plain texts across YAML 1.1 (PyYAML) and 1.2 (yaml_rs) resolution, and things neither reads as plain
SCALARS = [
    *"yes no on off Yes NO On OFF y n Y N true False TRUE null Null NULL ~ = << - -- --- ... ---x -x +x ?x :x".split(),
    *"0 -0 +0 00 010 -010 0o17 0O17 0x1F -0x1F 0X1F 0x_1F 1_000 0b101 -0b1 1:30 -1:30 12:30:00 190:20:30.15 1:60".split(),
    *"1e5 1E5 1.5e5 1.5e+5 1.5E-5 1.0e+5 .5 -.5 +.5 1. 10. +12 -12 3.14 -0.0 0.0 1.0 0.1_0 1__0 1_ 0x 0b 0o".split(),
    *".inf -.inf +.inf .Inf .INF .NaN .nan .NAN inf nan NaN Infinity -Infinity infinity".split(),
    "123456789012345678901234567890",
    "-98765432109876543210",
    "18446744073709551616",
    "1" * 400,
    "1" * 4301,  # more digits than Python reads: a problem for libyaml's path
    *"2001-12-14 2001-12-14t21:59:43.10-05:00 2026-01-02 2026-1-2 2001-12-14T21:59:43Z".split(),
    "2001-12-14 21:59:43.10 -5",
    *"plain x:y a#b http://h:1/p $schema ^[a-z]+$ C:\\dir \\d+ e é 日本 🙂 a'b it's x' o'clock".split(),
    "two words",
    "ends with colon:",
    "yes no",
    "010 020",
    "section 15.",
    "a: b",
    "a #b",
    "tab\there",
    "x\u2028y",
    "nb\xa0sp",
    "x\x85y",
    "\ufeffbom",
    "ctrl\x07",
    "del\x7f",
    "'single'",
    "'it''s'",
    "'yes'",
    "'010'",
    "''",
    '"double"',
    '"yes"',
    '"1e5"',
    '""',
    '"esc \\t \\u00e9 \\x41"',
    '"nul \\0"',
    '"sur \\ud800"',
    "'multi",
    "%d",
    "@at",
    "`tick",
    "!tag x",
    "!!str 1",
    "!!int 1",
    "&a x",
    "*a",
    "[1, 2]",
    "{a: 1}",
    "[yes, 010]",
    "|",
    ">-",
    "? x",
    "#not",
    "a, b",
    ", x",
    "x ]",
]
# what the fast path takes: typed values both read alike, and texts
CLEAN = [
    *"0 17 -3 +12 0.5 1.0 -0.0 1.5e+5 .5 1. 0x1F -0x1F true False TRUE ~ null Null 2026-01-02 plain x:y a#b é 日本".split(),
    *["two words", "'yes'", "'010'", '"1e5"', "'it''s'", "section 15.", "http://h:1/p", "'a: b'", '"x # y"', "", "-5"],
]
KEYS = [
    *"name a b kind spec yes no on 1 010 0x1F ~ null true 1e5 a:b -k ?k << Infinity 2001-12-14 é x#y k".split(),
    "key with space",
    "'q'",
    '"dq"',
    "'yes'",
    "? k",
    "[a]",
    "&x k",
    "!t k",
]
BLOCK_HEADERS = ["|", "|-", "|+", ">", ">-", ">+", "|2", ">1-", "| # c"]
DOCUMENT_ENDS = ["\n", "\n", "\n", "", "\n\n", "\n# end\n", "\n  \n", "  "]
DOCUMENT_STARTS = ["", "---\n", "--- # c\n", "# c\n---\n", "---\n# c\n\n", "--- x\n", "%YAML 1.1\n---\n", "...\n---\n", "---\n---\n"]


def _scalar(rng: random.Random) -> str:
    return rng.choice(CLEAN) if rng.random() < 0.92 else rng.choice(SCALARS)


def _block_line(rng: random.Random, pad: str) -> str:
    """A line of a block scalar's text: words, or what would be structure outside one."""
    shape = rng.random()
    if shape < 0.15:
        return rng.choice(["", pad + "  ", pad + "   ", pad + "     "])
    offset = rng.choice([2, 2, 2, 3, 5, 1])  # 1: less indented than the parent's other lines
    if shape < 0.5:
        text = rng.choice([*SCALARS, *(f"{k}: {rng.choice(BLOCK_HEADERS)}" for k in KEYS[:3]), "* item", "- **bold**", "[x](y)", "k: v"])
    else:
        text = f"{_scalar(rng)} {_scalar(rng)}"
    return pad + " " * offset + text


def _flow(rng: random.Random, depth: int) -> str:
    """A flow collection, mostly of the simple kind the fast path reads, sometimes not."""
    sep = rng.choice([", ", ", ", ",", " , ", ", ,"])
    count = rng.choice([0, 1, 2, 3])
    if rng.random() < 0.5:
        items = [_flow(rng, depth + 1) if depth < 4 and rng.random() < 0.25 else _scalar(rng) for _ in range(count)]
        text = "[" + sep.join(items) + rng.choice(["]", "]", "]", ", ]", "]]"])
    else:
        pairs = [f"{rng.choice(KEYS) if rng.random() < 0.2 else f'k{i}'}{rng.choice([': ', ': ', ':', ' : '])}" for i in range(count)]
        values = [_flow(rng, depth + 1) if depth < 4 and rng.random() < 0.25 else _scalar(rng) for _ in range(count)]
        text = "{" + sep.join(k + v for k, v in zip(pairs, values, strict=True)) + rng.choice(["}", "}", "}", ", }", "}}"])
    return text.replace(", ", ",\n  ", 1) if rng.random() < 0.05 else text


def _mapping(rng: random.Random, indent: int, depth: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for i in range(rng.randint(1, 4)):
        key = rng.choice(KEYS) if rng.random() < 0.1 else rng.choice(["name", "spec", "value", "items", "k", "text"]) + str(i)
        shape = rng.random()
        if shape < 0.45 or depth > 4:
            comment = " # note" if rng.random() < 0.1 else ""
            lines.append(f"{pad}{key}: {_scalar(rng)}{comment}")
        elif shape < 0.52:
            lines.append(f"{pad}{key}: {_flow(rng, depth)}")
        elif shape < 0.6:
            lines.append(f"{pad}{key}:")
            lines += _mapping(rng, indent + rng.choice([1, 2, 4]), depth + 1)
        elif shape < 0.75:
            lines.append(f"{pad}{key}:")
            lines += _sequence(rng, indent + rng.choice([0, 2]), depth + 1)
        elif shape < 0.9:
            lines.append(f"{pad}{key}: {rng.choice(BLOCK_HEADERS) if rng.random() < 0.2 else rng.choice(BLOCK_HEADERS[:6])}")
            for _ in range(rng.randint(0, 4)):
                lines.append(_block_line(rng, pad))
            lines += [""] * rng.choice([0, 0, 1, 2])
        else:  # a plain or quoted text over several lines
            quote = rng.choice(["", "'", '"'])
            lines.append(f"{pad}{key}: {quote}{rng.choice(SCALARS)}")
            lines += [f"{pad}  {rng.choice(SCALARS)}" for _ in range(rng.randint(1, 2))]
            lines[-1] += quote
    return lines


def _sequence(rng: random.Random, indent: int, depth: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for _ in range(rng.randint(1, 3)):
        shape = rng.random()
        if shape < 0.45 or depth > 4:
            lines.append(f"{pad}- {_scalar(rng)}")
        elif shape < 0.5:
            lines.append(f"{pad}- {_flow(rng, depth)}")
        elif shape < 0.8:  # a mapping in the item, starting on its line
            inner = _mapping(rng, indent + 2, depth + 1)
            lines += [f"{pad}- {inner[0].lstrip(' ')}", *inner[1:]]
        elif shape < 0.9:
            lines.append(f"{pad}-")
            lines += _mapping(rng, indent + 2, depth + 1)
        else:
            lines.append(f"{pad}- - {rng.choice(SCALARS)}")
    return lines


def _damage(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    what = rng.random()
    if what < 0.25:
        lines.insert(i, lines[rng.randrange(len(lines))])  # often a duplicate key
    elif what < 0.5:
        lines[i] = " " * rng.choice([1, 2, 3]) + lines[i]
    elif what < 0.65:
        lines[i] = lines[i].lstrip(" ")
    elif lines[i]:
        j = rng.randrange(len(lines[i]))
        lines[i] = lines[i][:j] + rng.choice([" ", ":", "-", "#", "'", '"', "\t", "[", "{", "&", "*", "!", "|", "", "\n"]) + lines[i][j + 1 :]
    return "\n".join(lines)


def _generated(rng: random.Random) -> str:
    documents = []
    for _ in range(rng.randint(1, 3)):
        lines = _mapping(rng, rng.choice([0, 0, 0, 2]), 0)
        start = rng.choice(DOCUMENT_STARTS if rng.random() < 0.3 else DOCUMENT_STARTS[:5])
        documents.append(start + "\n".join(lines) + rng.choice(DOCUMENT_ENDS))
    text = ("---\n" if rng.random() < 0.5 else "").join(documents) if len(documents) == 1 else "---\n".join(documents)
    return _damage(rng, text) if rng.random() < 0.3 else text


def test_the_grammar_s_documents_read_alike_or_go_to_libyaml() -> None:
    rng = random.Random(1818)
    taken = typed = 0
    cases = 6000
    for _ in range(cases):
        text = _generated(rng)
        if _check(text):
            taken += 1
            typed += any(f": {w}\n" in text + "\n" for w in ("0", "1.0", "true", "~", "null", "+12", "0x1F"))
    # the check proves something only if a fair share of documents, typed values among them, were taken
    assert taken > cases // 20 and typed > 50, (taken, typed)


def _random_data(rng: random.Random, depth: int = 0) -> Any:
    shape = rng.random()
    if depth > 3 or shape < 0.5:
        scalar = rng.choice(SCALARS)
        return rng.choice([scalar, scalar, 0, 17, -3, 2.5, 1e20, True, False, None, scalar + "\nsecond line\n"])
    if shape < 0.8:
        return {rng.choice(KEYS) if rng.random() < 0.3 else f"k{i}": _random_data(rng, depth + 1) for i in range(rng.randint(1, 5))}
    return [_random_data(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def test_documents_pyyaml_dumps_from_random_data_read_alike_or_go_to_libyaml() -> None:
    rng = random.Random(18)
    taken = 0
    for _ in range(1500):
        documents = [{"apiVersion": "reconciler/v1", "spec": _random_data(rng)} for _ in range(rng.randint(1, 3))]
        unicode = rng.random() < 0.5
        text = yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False, allow_unicode=unicode, explicit_start=rng.random() < 0.7)
        taken += _check(text)
    assert taken > 150, taken


def test_the_benchmark_workload_takes_the_fast_path_and_reads_alike(tmp_path: Path) -> None:
    from bench.workload import generate, write_manifests

    write_manifests(generate(1500), tmp_path, docs_per_file=200)
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        assert _check(path.read_text(encoding="utf-8")), path


def test_every_yaml_file_in_the_repository_reads_alike_or_goes_to_libyaml() -> None:
    files = [p for d in ("manifests", "examples", "tests") for p in sorted((REPO / d).rglob("*.y*ml"))]
    assert len(files) >= 10
    for path in files:
        _check(path.read_text(encoding="utf-8"))
    # the quick start's files, flow collections and all, take the fast path
    assert all(_check(path.read_text(encoding="utf-8")) for path in (REPO / "manifests").glob("*.yaml"))


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        ("a: 1\nb: 0.5\nc: true\nd: ~\ne: x\n", True),
        ("a: 'yes'\nb: \"010\"\nc: '1e5'\n", True),
        ("a: |\n  Answer yes or\n  no.\nb: >-\n  x\n\n  y\n", True),
        ("a: |\n  Answer yes or no\n", True),  # a block scalar's lines are text in both
        ("a: |\n  * item\n  [link](x) & more\n  !important: yes\n\nb: 1\n", True),
        ("a:\n- k: >-\n    x\n\n     y\n- |+\n  z\n\n", True),
        ("a: x\n  yes\n", False),  # a plain text over lines: its last words are checked
        ("a: |\n    x\n  y\n", False),  # a block's line indented less than its first
        ("a: |\n      \n    x\n", False),  # a leading line of spaces longer than the indentation
        ("---\nkind: A\n---\n# c\nkind: B\n", True),
        ("  a: 1\n", True),
        ("a: yes\n", False),  # YAML 1.1 boolean: True for libyaml, text for yaml_rs
        ("a: 010\n", False),  # octal 8 for libyaml, 10 for yaml_rs
        ("a: 1e5\n", False),  # text for libyaml, a number for yaml_rs
        ("a: 1:30\n", False),  # sexagesimal 90
        ("1: a\n", False),  # a number as key: yamlparse makes it the text '1'
        ("a: 1\na: 2\n", False),  # a duplicate key: libyaml's path reports it
        ("a: [1, 2]\nb: {c: x, d: [y, 'z w']}\n", True),
        ("a: [1, 2, ]\n", False),
        ("a: {b: 1}: c\n", False),
        ("a: [x:y]\n", False),  # libyaml ends a plain scalar at any ':' in a flow
        ("a: [yes, 010]\n", False),
        ("a: &x 1\nb: *x\n", False),
        ("a: !!str 1\n", False),
        ('a: "x\\0y"\n', False),
        ("a: 1\n---\n", False),  # an empty document: libyaml's path warns
        ("- a\n", False),
        ("", False),
        ("a:\tb\n", False),
        ("a: b\r\n", False),
        ("a: .inf\n", False),
        ("a: " + "1" * 4301 + "\n", False),
        ('a: |\n  "\\d+" in JSON\n', True),  # escapes only matter outside block scalars
        ('a: "\\d+"\n', False),
    ],
)
def test_which_files_take_the_fast_path(text: str, taken: bool) -> None:
    assert (parse_plain(text, "t.yaml") is not None) is taken
    _check(text)


def test_parse_text_gives_the_same_documents_with_and_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "manifests" / "runs.yaml").read_text(encoding="utf-8")
    text = "---\n# first\nkind: Extra\nspec:\n  n: 1\n  flag: false\n---\n" + text
    fast_documents, fast_problems = yamlfile.parse_text(text, "r.yaml")
    monkeypatch.setattr(yamlfile, "FAST_YAML", False)
    documents, problems = yamlfile.parse_text(text, "r.yaml")
    assert parse_plain(text, "r.yaml") is not None  # the fast path was taken above
    assert fast_problems == problems == []
    assert [(d.index, repr(d.data), d.location, d.marks) for d in fast_documents] == [(d.index, repr(d.data), d.location, d.marks) for d in documents]


@pytest.mark.parametrize(
    "text",
    [
        "a: 'x\n  b: |\n    y'\n",
        'a: "x\n  b: |\n    y: 1"\nc: 1\n',
        "a: x\n  b: |\n    y\n",
        "a:\n  b: |\n  c: 1\n",
        "a:\n  - |\n   x\n  - y\n",
        "a: |\n  x\n b: 1\n",
        "a: >\n  x\n  ---\n",
        "a: |\n  x\n---\nb: |\n  y\n",
        "# b: |\n  c: 1\n",
    ],
)
def test_lines_that_look_like_block_scalars_read_alike_or_go_to_libyaml(text: str) -> None:
    _check(text)


def test_deep_indentation_and_long_documents_go_to_libyaml() -> None:
    deep = "a:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(40)) + " " * 41 + "k: v\n"
    assert parse_plain(deep, "t.yaml") is None
    long = "a: |\n" + "  x\n" * (yamlfast._MAX_DOCUMENT_CHARS // 4 + 1)
    assert parse_plain(long, "t.yaml") is None
    _check(deep)


def test_only_a_file_that_has_to_be_parsed_imports_yaml_rs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm parse cache reads no YAML: neither PyYAML nor yaml_rs is imported."""
    from bench.workload import SECRET_ENV, generate, write_manifests
    from tests import test_plan_imports

    root = write_manifests(generate(40), tmp_path / "m")
    monkeypatch.setenv(SECRET_ENV, "x")
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(test_plan_imports, "HEAVY", ("yaml", "yaml_rs"))
    cold = test_plan_imports._probe(tmp_path, "validate", str(root))
    assert cold["code"] == 0 and {"yaml", "yaml_rs"} <= set(cold["heavy"]), cold["stderr"]
    warm = test_plan_imports._probe(tmp_path, "validate", str(root))
    assert warm["code"] == 0 and warm["heavy"] == [], warm["stderr"]


def test_the_parse_cache_key_covers_the_fast_path_and_yaml_rs() -> None:
    """An edit of yamlfast.py or another yaml_rs misses the parse cache, as an edit of yamlparse.py does."""
    salt = "\n".join(yamlfile.parser_salt())
    assert "manifests/yamlfast.py:" in salt and "yaml_rs/__init__.py:" in salt, salt
