"""Hostile and broken manifests: a fixed corpus of known attacks plus mutation helpers.

Every case is a mapping of file name -> bytes, so the same corpus can be written to disk for a
subprocess (to catch crashes and measure memory) or fed to the loader in-process.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

AGENT = """\
apiVersion: reconciler/v1
kind: Agent
metadata:
  name: triage
spec:
  provider: local
  model_name: gemma3-270m
  system_prompt: {prompt}
"""
PROVIDER = """\
apiVersion: reconciler/v1
kind: Provider
metadata:
  name: local
spec:
  type: llamacpp
"""


def _billion_laughs(levels: int = 9, fan: int = 10) -> str:
    lines = ['a0: &a0 "lol"']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * fan)
        lines.append(f"a{i}: &a{i} [{refs}]")
    body = "\n".join("  " + line for line in lines)
    return f"apiVersion: reconciler/v1\nkind: Task\nmetadata:\n  name: bomb\nspec:\n  response_schema:\n{body}\n"


def _agent(prompt: str) -> bytes:
    return (PROVIDER + "---\n" + AGENT.format(prompt=prompt)).encode("utf-8")


def corpus() -> dict[str, dict[str, bytes]]:
    """Named hostile inputs; each is a small manifests tree."""
    mib = 1024 * 1024
    return {
        "billion-laughs": {"bomb.yaml": _billion_laughs().encode()},
        "billion-laughs-in-schema-file": {
            "task.yaml": b"apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  response_schema: {from_file: s.yaml}\n",
            "s.yaml": _billion_laughs().encode(),
        },
        "deep-flow-1m": {"deep.yaml": b"[" * 1_000_000},
        "deep-block-500k": {"deep.yaml": b"- " * 500_000 + b"x\n"},
        "deep-mapping-100k": {"deep.yaml": b"{a: " * 100_000},
        "deep-indent": {"deep.yaml": "".join(" " * i + "k:\n" for i in range(3000)).encode()},
        "deep-json-schema-file": {
            "task.yaml": b"apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  response_schema: {from_file: s.json}\n",
            "s.json": b"[" * 200_000 + b"]" * 200_000,
        },
        "deep-jsonl-inputs": {
            "run.yaml": (PROVIDER + "---\nkind: Run\napiVersion: reconciler/v1\nmetadata: {name: r}\nspec:\n  assignment: a\n  inputs_file: in.jsonl\n").encode(),
            "in.jsonl": b"[" * 100_000 + b"\n",
        },
        "python-object-apply": {"evil.yaml": b"!!python/object/apply:os.system ['touch pwned']\n"},
        "python-object-in-field": {"evil.yaml": _agent("!!python/object/apply:os.system ['touch pwned']")},
        "python-name-tag": {"evil.yaml": _agent("!!python/name:os.system")},
        "custom-tag": {"evil.yaml": _agent("!Ref secret")},
        "binary-tag": {"evil.yaml": _agent("!!binary aGVsbG8=")},
        "merge-key": {"evil.yaml": b"base: &b {kind: Agent}\n<<: *b\n"},
        "duplicate-keys": {"dup.yaml": PROVIDER.encode() + b"kind: Agent\n"},
        "duplicate-nested-keys": {"dup.yaml": PROVIDER.replace("type: llamacpp", "type: llamacpp\n  type: openai").encode()},
        "huge-string-15mb": {"big.yaml": _agent('"' + "x" * (15 * mib) + '"')},
        "file-over-limit": {"big.yaml": b"# " + b"x" * (17 * mib) + b"\n"},
        "too-many-documents": {"many.yaml": b"a: 1\n---\n" * 25_000},
        "empty-documents": {"empty.yaml": b"---\n---\n...\n"},
        "binary-file": {"bin.yaml": b"\x7fELF\x00\x00\x01" * 100},
        "invalid-utf8": {"bad.yaml": b"kind: \xff\xfe\n"},
        "nul-escape": {"nul.yaml": _agent('"before\\0after"')},
        "lone-surrogate": {"sur.yaml": _agent('"\\ud800"')},
        "odd-unicode": {"uni.yaml": _agent('"\u202eevil\u200b\ufeff\U0001f600 e\u0301"')},
        "bom-and-crlf": {"crlf.yaml": b"\xef\xbb\xbf" + PROVIDER.replace("\n", "\r\n").encode()},
        "infinity": {"inf.yaml": _agent("ok").replace(b"system_prompt: ok", b"temperature: .inf")},
        "nan-in-schema": {
            "t.yaml": b"apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  response_schema: {type: number, maximum: .nan}\n"
        },
        "huge-int": {"int.yaml": _agent("ok").replace(b"system_prompt: ok", b"max_tokens: 99999999999999999999999999")},
        "long-model-name": {"long.yaml": _agent("ok").replace(b"gemma3-270m", b"m" * 5000)},
        "wrong-types": {"types.yaml": b"apiVersion: [1]\nkind: {a: b}\nmetadata: 3\nspec: null\n"},
        "not-a-mapping": {"list.yaml": b"- 1\n- 2\n"},
        "unterminated-quote": {"q.yaml": b'apiVersion: "reconciler/v1\nkind: Agent\n'},
        "tab-indent": {"tab.yaml": b"apiVersion: reconciler/v1\nkind: Provider\nmetadata:\n\tname: x\n"},
        "path-escape": {
            "t.yaml": b"apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  response_schema: {from_file: ../../../../../../etc/passwd}\n"
        },
        "absolute-path": {
            "t.yaml": b"apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: t}\nspec:\n  response_schema: {from_file: /etc/hostname}\n"
        },
        "literal-secret": {"p.yaml": PROVIDER.replace("type: llamacpp", "type: openai\n  api_key: sk-live-123").encode()},
        "anchor-key": {"k.yaml": b"? [a, b]\n: c\n"},
    }


def write_case(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@dataclass(frozen=True)
class Outcome:
    """What one CLI invocation did with a hostile input."""

    command: str
    exit_code: int
    stderr: str
    seconds: float
    max_rss_mib: float  # peak of the whole child process so far

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr or "internal error" in self.stderr

    @property
    def located(self) -> bool:
        """There is an error, and every error line names a place: file, or file:line:column."""
        errors = [line for line in self.stderr.splitlines() if ": error: " in line or line.startswith("error: ")]
        return bool(errors) and all(not line.startswith("error: ") for line in errors)


MEMORY_LIMIT_BYTES = 1536 * 1024 * 1024


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def run_cli_batch(invocations: list[list[str]], cwd: Path, timeout: float = 300) -> list[Outcome]:
    """Run CLI invocations in one child process under a memory ceiling (see cli_batch.py).

    A crash of the child (e.g. SIGSEGV) is returned as an outcome with a negative exit code; the
    timeout only guards against a hang."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RECONCILER_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.cli_batch", json.dumps(invocations)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )
    outcomes = [Outcome(**json.loads(line)) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(outcomes) != len(invocations):
        missing = invocations[len(outcomes)]
        outcomes.append(Outcome(missing[0], proc.returncode or -1, proc.stderr[-2000:], 0.0, -1.0))
    return outcomes


COMMANDS = ("validate", "plan", "apply")


def probe_corpus(cases: dict[str, dict[str, bytes]], workdir: Path, db_url_for: Callable[[str], str]) -> dict[str, list[Outcome]]:
    """validate, plan and apply every case, all in one child process; outcomes per case."""
    invocations = []
    for name, files in cases.items():
        root = str(write_case(workdir / name, files))
        db = db_url_for(name)
        invocations += [["validate", root], ["plan", root, "--db", db], ["apply", root, "--db", db, "--auto-approve"]]
    outcomes = run_cli_batch(invocations, workdir)
    names = list(cases)
    return {name: outcomes[i * 3 : i * 3 + 3] for i, name in enumerate(names)}


if __name__ == "__main__":  # pragma: no cover - manual exploration
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        results = probe_corpus(corpus(), Path(tmp), lambda name: f"sqlite:///{tmp}/{name}.db")
        for case_name, outcomes in results.items():
            for o in outcomes:
                print(json.dumps([case_name, o.command, o.exit_code, round(o.seconds, 2), round(o.max_rss_mib), o.located, o.traceback, o.stderr[-300:]]))
