"""Before and after: one reconciler command from two source trees, interleaved A, B, A, B.

    python -m bench.compare 7 /tmp/main /tmp/branch -- plan manifests/ --db {db} --detailed-exitcode
    python -m bench.compare 5 /tmp/main /tmp/branch --setup "apply manifests/ --db {db} --auto-approve" -- plan ...

Each tree is a directory holding the ``reconciler`` package (``git archive REV reconciler | tar -x -C DIR``).
Every run gets a fresh directory for ``{db}`` (a SQLite file) and its parse cache; ``--setup``
runs first in that directory, untimed (to time a plan against an applied state with a warm cache).
Which tree goes first alternates, so both see the same load; medians of wall and CPU time and the
mean 1-minute load average are printed. On a shared machine compare CPU times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import speed_probe


def _argv(args: list[str], db: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *(a.replace("{db}", db) for a in args)]


def parse_with_command(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options before ``--`` and the reconciler command after it (which has options of its own)."""
    if "--" not in argv:
        parser.error("give the reconciler command after --")
    split = argv.index("--")
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repeat", type=int)
    p.add_argument("trees", nargs=2, type=Path)
    p.add_argument("--setup", default="", help="an untimed reconciler command run first (use {db})")
    args, command = parse_with_command(p, sys.argv[1:] if argv is None else argv)
    results: dict[Path, list[tuple[float, float, float, float]]] = {tree: [] for tree in args.trees}
    for tree in args.trees:  # bytecode compiled first, as pip does on install (a `git archive` tree has none)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], stdout=subprocess.DEVNULL, check=True)
    for rep in range(args.repeat):
        for tree in args.trees if rep % 2 == 0 else args.trees[::-1]:
            work = Path(tempfile.mkdtemp(prefix="reconciler-compare-"))
            try:
                db = f"sqlite:///{work / 'state.db'}"
                env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "RECONCILER_CACHE_DIR": str(work / "cache")}
                if args.setup:
                    subprocess.run(_argv(args.setup.split(), db), env=env, cwd=work, stdout=subprocess.DEVNULL, check=True)
                probe, load = speed_probe(), os.getloadavg()[0]
                started = time.perf_counter()
                # stderr to a file, not a pipe: a command writing more than a pipe holds would wait forever
                with open(work / "stderr.txt", "wb") as err:
                    proc = subprocess.Popen(_argv(command, db), env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=err)
                    _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - started
                code = os.waitstatus_to_exitcode(status)
                if code not in (0, 2):
                    print(f"{tree}: exit {code}: {(work / 'stderr.txt').read_text(errors='replace')[-500:]}", file=sys.stderr)
                    return 1
                results[tree].append((wall, usage.ru_utime + usage.ru_stime, load, probe))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    for tree, runs in results.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(
            f"{tree}: wall {wall:.3f} s, CPU {cpu:.3f} s (medians of {len(runs)}), load {statistics.fmean(r[2] for r in runs):.1f}, "
            f"probe {statistics.median(r[3] for r in runs):.1f} ms"
        )
    first, second = (results[tree] for tree in args.trees)
    # each repetition's two runs were taken moments apart: their ratio cancels a host whose speed drifts
    ratios = [(b[0] / a[0], b[1] / a[1]) for a, b in zip(first, second, strict=True) if a[0] > 0 and a[1] > 0]
    if ratios:
        print(
            f"second / first, median of the {len(ratios)} side-by-side pairs: wall {statistics.median(r[0] for r in ratios):.3f}, "
            f"CPU {statistics.median(r[1] for r in ratios):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
