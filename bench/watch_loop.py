"""``reconciler watch`` under load: N resources in F files, one file changed at a time.

The real command runs as a child process with ``--json``; after its start-up apply, one agent's
temperature is changed in one file at a time and the reconcile event that follows is read. Two
figures per change: the reconcile itself (the event's ``duration_ms``: from the moment watch
reacts to the change until the apply has committed) and the wall time from writing the file to
reading the event, which adds the ``--debounce`` wait and the file-system notification. The
watcher's CPU time per reconcile comes from /proc (Linux).

    python -m bench.watch_loop [N] [FILES] [CHANGES]
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from bench import report
from bench.measure import Sample, load_average, speed_probe
from bench.tools import reconciler_argv
from bench.workload import generate, write_manifests

DEBOUNCE_MS = 50  # the smallest grouping that still merges an editor's write-and-rename
STARTUP_TIMEOUT = 600.0
CHANGE_TIMEOUT = 60.0
_TEMPERATURE = re.compile(r"^(  temperature: )(\S+)$", re.MULTILINE)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settle(pid: int, timeout: float = 30.0) -> None:
    """Wait until the watcher is idle (its CPU time stops moving): what it does after an event (it
    reads the state it just wrote, for the next change) is not counted against the next change."""
    deadline, last = time.monotonic() + timeout, _cpu_seconds(pid)
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        now = _cpu_seconds(pid)
        if now == last:
            return
        last = now


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _next_event(stream: IO[str], deadline: float, log: list[str]) -> dict[str, Any]:
    """The next reconcile event on the watcher's stdout (run events are skipped)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError("no reconcile event from `reconciler watch`:\n" + "".join(log[-20:]))
        line = stream.readline()
        if not line:
            raise RuntimeError("`reconciler watch` exited:\n" + "".join(log[-20:]))
        log.append(line)
        event = json.loads(line)
        if event.get("event") == "reconcile":
            return event


def _change_one(path: Path, step: int) -> None:
    """A new temperature for the first agent of ``path``: exactly one update to apply."""
    text = path.read_text(encoding="utf-8")
    new, count = _TEMPERATURE.subn(lambda m: f"{m.group(1)}{(step % 19) / 10 + 0.05:.2f}", text, count=1)
    assert count == 1, f"no agent temperature in {path}"
    path.write_text(new, encoding="utf-8")


def measure_watch(n: int, files: int, changes: int, env: dict[str, str], work: Path, debounce_ms: int = DEBOUNCE_MS) -> list[Sample]:
    """Samples of WATCH_RECONCILE and WATCH_END_TO_END, one per change."""
    workload = generate(n)
    docs_per_file = max(1, -(-n // files))
    manifests = write_manifests(workload, work / "watch-manifests", docs_per_file)
    agent_files = sorted(manifests.glob("agents-*.yaml"))
    db = f"sqlite:///{work / 'watch-state.db'}"
    argv = reconciler_argv("watch", str(manifests), "--db", db, "--json", "--debounce", str(debounce_ms), "--interval", "3600", "--no-validate")
    child_env = {**env, "RECONCILER_CACHE_DIR": str(work / "watch-cache")}
    proc = subprocess.Popen(argv, cwd=work, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    log: list[str] = []
    samples = []
    try:
        started = _next_event(proc.stdout, time.monotonic() + STARTUP_TIMEOUT, log)
        if started["outcome"] != "applied":
            raise RuntimeError(f"watch did not apply at start: {started}")
        for step in range(changes):
            time.sleep(0.3)  # let the notifications of the previous write drain
            _settle(proc.pid)
            target = agent_files[step % len(agent_files)]
            probe = speed_probe()
            cpu_before, load_before = _cpu_seconds(proc.pid), load_average()
            written = time.perf_counter()
            _change_one(target, step)
            event = _next_event(proc.stdout, time.monotonic() + CHANGE_TIMEOUT, log)
            end_to_end = time.perf_counter() - written
            cpu_after = _cpu_seconds(proc.pid)
            if event["outcome"] != "applied" or event["summary"].get("update") != 1:
                raise RuntimeError(f"expected one update, got {event}")
            cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else 0.0
            rss, load_after = _peak_rss_mib(proc.pid), load_average()
            samples.append(
                Sample(report.SQLITE, report.WATCH_RECONCILE, n, step, event["duration_ms"] / 1000, cpu, rss, load_before, load_after, probe_ms=probe)
            )
            samples.append(Sample(report.SQLITE, report.WATCH_END_TO_END, n, step, end_to_end, cpu, rss, load_before, load_after, probe_ms=probe))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return samples


def main(argv: list[str]) -> None:
    n, files, changes = (int(a.replace("_", "")) for a in (argv + ["10000", "100", "5"][len(argv) :]))
    from bench.__main__ import _fernet_key
    from bench.tools import reconciler_env
    from bench.workload import SECRET_ENV

    env = reconciler_env({"RECONCILER_SECRET_KEY": _fernet_key(), SECRET_ENV: "sk-bench-not-a-real-key"})
    with tempfile.TemporaryDirectory(prefix="reconciler-watch-bench-") as tmp:
        for s in measure_watch(n, files, changes, env, Path(tmp)):
            print(f"{s.measure:48s} {s.seconds * 1000:8.1f} ms  cpu {s.cpu_seconds * 1000:7.1f} ms  load {s.load:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
