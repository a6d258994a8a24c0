"""Field positions are worked out lazily from the file's text; they must point where the field is."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import Location
from reconciler.manifests.yamlfile import read_yaml_file

TEXT = """\
a: 1
---
# an empty document follows
---
---
kind: Agent
spec:
  items:
    - x
    - {name: y}
  prompt: |
    two
    lines
"""


def test_where_points_at_fields_of_later_documents(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(TEXT, encoding="utf-8")
    documents, problems = read_yaml_file(path, "m.yaml")
    assert [p.message for p in problems] == ["document 2 is empty; skipped", "document 3 is empty; skipped"]
    first, last = documents
    assert (first.index, last.index) == (0, 3)
    assert first.where(("a",)) == Location("m.yaml", 1, 1)
    assert last.where(("spec", "items", 1, "name")) == Location("m.yaml", 10, 8)
    assert last.where(("spec", "prompt")) == Location("m.yaml", 11, 3)
    assert last.where(("spec", "missing")) == Location("m.yaml", 7, 1)
    assert last.where(()) == last.location == Location("m.yaml", 6, 1)


def test_duplicate_key_names_the_first_definition(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("spec:\n  a: 1\n  b: 2\n  a: 3\n", encoding="utf-8")
    _, problems = read_yaml_file(path, "d.yaml")
    assert [(p.message, p.location, p.field) for p in problems] == [
        ("duplicate key 'a' (first defined at line 2)", Location("d.yaml", 4, 3), "spec.a")
    ]
