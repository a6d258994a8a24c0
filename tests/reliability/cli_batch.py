"""Child process: run several ``reconciler`` invocations through the real entry point and print,
for each, one JSON line with its exit code, stderr, duration and the process's peak memory.

Used by the hostile-input tests so that a crash (SIGSEGV, OOM) shows up as a dead child instead of
taking pytest down, and so memory stays bounded by the parent's RLIMIT_AS.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time


def _run_one(args: list[str]) -> dict[str, object]:
    from reconciler.cli import main

    err, out = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - anything escaping main() is the bug we look for
            import traceback

            err.write("Traceback (most recent call last)\n" + "".join(traceback.format_exception(exc)))
            code = 99
    return {
        "command": args[0],
        "exit_code": code,
        "stderr": err.getvalue()[-20_000:],
        "seconds": time.perf_counter() - started,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    for args in json.loads(sys.argv[1]):
        print(json.dumps(_run_one(args)), flush=True)


if __name__ == "__main__":
    main()
