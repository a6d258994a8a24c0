"""Instructions one reconciler command executes, from one or more source trees: a measure of the
code that does not depend on the load or on the host's speed.

    python -m bench.instructions /tmp/main /tmp/branch -- --help
    python -m bench.instructions /tmp/main /tmp/branch --setup "apply DIR --db {db} --auto-approve --no-validate" -- plan DIR --db {db}

Each tree is a directory holding the ``reconciler`` package (``git archive REV reconciler | tar -x
-C DIR``), as for ``bench.compare``. Every run gets a fresh directory for ``{db}`` and its parse
cache; ``--setup`` runs first, uncounted (an apply fills the cache, so the plan after it reads
every file from it). The command then runs under valgrind's callgrind (about 30 times slower),
which counts the instructions the process executes. Why: on this shared host the same command's
wall time has swung 1.5-2x within minutes (BENCHMARKS.md, issue 18), and an interleaved ratio
(``bench.compare``) needs many pairs to settle; a count is repeatable to a fraction of a percent
(string hashing is fixed with ``PYTHONHASHSEED=0``, parsing stays in one process with
``RECONCILER_PARSE_PROCESSES=1``: callgrind does not follow children). A count is not a time:
instructions that wait on memory or the disk cost more than others, so a ratio of counts tells
what a change did to the work, and the wall-time targets are still judged by ``python -m bench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.compare import parse_with_command

_COLLECTED = re.compile(r"^==\d+== Collected : (\d+)$", re.MULTILINE)


def collected(stderr: str) -> int | None:
    """The instruction count callgrind prints at exit (``==PID== Collected : N``), None if absent."""
    found = _COLLECTED.search(stderr)
    return int(found.group(1)) if found else None


def _argv(args: list[str], db: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *(a.replace("{db}", db) for a in args)]


def count(tree: Path, command: list[str], setup: str = "") -> int:
    """The instructions ``reconciler COMMAND`` executes from ``tree``; raises RuntimeError when
    valgrind is missing or the command fails (exit codes 0 and 2, "changes", are success)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not on PATH: apt-get install valgrind")
    work = Path(tempfile.mkdtemp(prefix="reconciler-instructions-"))
    try:
        db = f"sqlite:///{work / 'state.db'}"
        env = {
            **os.environ,
            "PYTHONPATH": str(tree.resolve()),
            "RECONCILER_CACHE_DIR": str(work / "cache"),
            "PYTHONHASHSEED": "0",
            "RECONCILER_PARSE_PROCESSES": "1",
        }
        if setup:
            subprocess.run(_argv(setup.split(), db), env=env, cwd=work, stdout=subprocess.DEVNULL, check=True)
        argv = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *_argv(command, db)]
        proc = subprocess.run(argv, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        found = collected(proc.stderr)
        if proc.returncode not in (0, 2) or found is None:
            raise RuntimeError(f"{tree}: exit {proc.returncode}: {proc.stderr[-500:]}")
        return found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="+", type=Path)
    p.add_argument("--setup", default="", help="an uncounted reconciler command run first (use {db})")
    args, command = parse_with_command(p, sys.argv[1:] if argv is None else argv)
    for tree in args.trees:  # bytecode compiled first, as pip does on install: compiling is not the command's work
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], stdout=subprocess.DEVNULL, check=True)
    counts: list[int] = []
    for tree in args.trees:
        try:
            counts.append(count(tree, command, args.setup))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        ratio = f"  ({counts[-1] / counts[0]:.3f} of the first)" if len(counts) > 1 else ""
        print(f"{tree}: {counts[-1]:,} instructions{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
