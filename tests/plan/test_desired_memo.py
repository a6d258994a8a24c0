"""watch reuses the desired resources of manifests it loaded before (``DesiredMemo``): the result is
always what computing them again gives, whatever changed, the YAML or a file a manifest refers to."""

from __future__ import annotations

from pathlib import Path

from reconciler.manifests.loader import ParsedFiles, load_manifests
from reconciler.plan.desired import DesiredMemo, desired_state
from tests.test_parse_cache import fresh_cache, root  # noqa: F401  (root: a fixture)


def test_the_memo_gives_what_computing_again_gives(root: Path, tmp_path: Path) -> None:  # noqa: F811
    parsed, memo = ParsedFiles(), DesiredMemo()
    secrets = iter(f"hmac-{i}" for i in range(100))

    def fingerprint(ref: dict[str, str], m: object) -> str:  # a new value each call: a secret read now
        return next(secrets)

    def both() -> tuple[dict, dict]:  # type: ignore[type-arg]
        manifests = load_manifests([str(root)], cache=fresh_cache(tmp_path / "c"), parsed=parsed)
        kept = desired_state(manifests, fingerprint, memo)
        return kept, desired_state(manifests, lambda ref, m: kept[("Provider", "openai")].essence["api_key"]["hmac"])

    kept, fresh = both()
    assert kept == fresh and memo.hits == 0
    kept, fresh = both()
    assert kept == fresh
    assert memo.hits == len(kept)  # a provider too, its essence (the HMAC of the secret read now) computed again
    assert kept[("Provider", "openai")].essence["api_key"]["hmac"] == "hmac-1"

    agents = root / "agents.yaml"
    agents.write_text(agents.read_text().replace("temperature: 0\n", "temperature: 0.5\n"), encoding="utf-8")
    (root / "schemas/answer.json").write_text('{"type": "object", "required": ["x"]}', encoding="utf-8")
    (root / "data/inputs.jsonl").write_text('{"text": "bye", "label": "b"}\n', encoding="utf-8")
    hits = memo.hits
    kept, fresh = both()
    assert kept == fresh
    assert kept[("Agent", "classifier")].essence["temperature"] == 0.5
    assert kept[("Task", "from-file")].essence["response_schema"] == {"type": "object", "required": ["x"]}
    assert kept[("Provider", "openai")].essence["api_key"]["hmac"] == "hmac-2"
    # the edited file's manifests (2 agents, 1 assignment, 2 runs) and the task whose schema file
    # changed are computed again; the inline task and the two providers are reused
    assert memo.hits - hits == 3
