"""Timings of the GitOps loop at scale: drift check, no-op watch reconcile, export, --git-ref plan.

    python -m bench.gitops_loop [N]    (N resources, default 2000; SQLite in a temporary directory)

Each command runs once through the real CLI in a subprocess; wall-clock seconds are printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.workload import SECRET_ENV, generate, write_manifests


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, out.returncode


def main(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_manifests(generate(n), work / "manifests")
        git = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
        env = {**os.environ, **git, SECRET_ENV: "sk-bench", "RECONCILER_DATABASE_URL": f"sqlite:///{work / 'state.db'}",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
            subprocess.run(["git", *cmd], cwd=work, env=env, check=True)
        steps = [
            ("apply (initial)", ["apply", "manifests", "--auto-approve"]),
            ("plan (no changes)", ["plan", "manifests", "--detailed-exitcode"]),
            ("plan --git-ref HEAD", ["plan", "manifests", "--git-ref", "HEAD", "--detailed-exitcode"]),
            ("drift", ["drift", "--detailed-exitcode"]),
            ("watch --once (no-op reconcile)", ["watch", "manifests", "--once"]),
            ("export --out", ["export", "--out", "exported"]),
            ("plan of the export", ["plan", "exported", "--detailed-exitcode"]),
        ]
        print(f"{n} resources")
        for label, args in steps:
            seconds, code = _timed(args, work, env)
            print(f"  {label:<32} {seconds:6.2f} s  (exit {code})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
