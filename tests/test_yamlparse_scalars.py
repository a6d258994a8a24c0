"""The converter's shortcuts (strings inlined in lists as in mappings, numbers and booleans
constructed once per text) give what PyYAML's safe loader gives, and refuse what they refused."""

from __future__ import annotations

import yaml

from reconciler.manifests.yamlfile import parse_text

TEXT = """
a: [1, 1, "1", 0x1F, 1_000, 0.2, 0.2, .5, -0.0, 1e3, true, True, yes, no, off, ~, null, "x", plain, 2026-01-02]
b: {n: 1, f: 0.2, t: true, s: "1", d: 2026-01-02}
c:
- - 1
  - nested
- {k: 0.2}
"""


def test_repeated_scalars_and_strings_in_lists_read_as_safe_load_reads_them() -> None:
    expected = yaml.safe_load(TEXT)
    expected["a"][-1] = expected["b"]["d"] = "2026-01-02"  # dates stay text
    for _ in range(2):  # the second time from the memo
        (doc,), problems = parse_text(TEXT, "x.yaml")
        assert problems == []
        assert doc.data == expected
        assert [type(v) for v in doc.data["a"]] == [type(v) for v in expected["a"]]


def test_a_non_finite_number_is_refused_every_time() -> None:
    for _ in range(2):
        docs, problems = parse_text("a: [.inf, 1]\n", "x.yaml")
        assert docs == [] and [str(p.location) for p in problems] == ["x.yaml:1:5"]
        assert "'.inf' is not a finite number" in problems[0].message


def test_a_string_in_a_list_is_still_checked_when_the_file_has_risky_escapes() -> None:
    docs, problems = parse_text('a: ["ok", "nul \\0 here"]\n', "x.yaml")
    assert docs == [] and [str(p.location) for p in problems] == ["x.yaml:1:11"]
    assert "NUL" in problems[0].message


def test_document_markers_are_where_the_regular_expression_finds_them() -> None:
    """may_nest_deeply splits a text at its document markers with str.find; the regular
    expression it replaced is the reference."""
    import random
    import re

    from reconciler.manifests.yamlfile import _document_markers

    reference = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)
    rng = random.Random(18)
    pieces = ["---", "...", "-", ".", "\n", "\r", " ", "\t", "a", "\x85", "\u2028", "----", "--- x"]
    texts = ["", "---", "...", "---\n", "a\n---", "\n...", "----\n", "\r---\n", "x---\n"]
    texts += ["".join(rng.choices(pieces, k=rng.randint(0, 120))) for _ in range(3000)]
    for text in texts:
        assert _document_markers(text) == [m.start() for m in reference.finditer(text)], repr(text)
