from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_quick_start_manifests_apply_then_plan_is_empty(cli_run, sqlite_url: str) -> None:
    manifests = str(REPO / "manifests")
    code, out, err = cli_run("validate", manifests)
    assert code == 0, err
    assert "Valid: 8 resources" in out
    code, out, _ = cli_run("apply", manifests, "--db", sqlite_url, "--auto-approve")
    assert code == 0
    assert "Apply complete (#1): 8 created, 0 updated, 0 deleted." in out
    code, out, _ = cli_run("plan", manifests, "--db", sqlite_url, "--detailed-exitcode")
    assert (code, out) == (0, "No changes. The database matches the manifests.\n")


def _console(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed command's entry point in a fresh interpreter, with ``code`` run first."""
    script = f"import sys\n{code}\nfrom reconciler.cli import entry_point\nentry_point()\n"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_entry_point_runs_exit_handlers_and_keeps_the_exit_status(tmp_path: Path) -> None:
    """The command exits without interpreter teardown, yet exit handlers (which stop the embedded
    model server and close database connections) still run, and output and status are intact."""
    marker = tmp_path / "handler-ran"
    register = f"import atexit; atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))"
    ok = _console(f"{register}\nsys.argv = ['reconciler', '--version']", tmp_path)
    assert ok.returncode == 0 and "reconciler" in ok.stdout
    assert marker.read_text() == "yes"

    marker.unlink()
    bad = _console(f"{register}\nsys.argv = ['reconciler', 'validate', 'no-such-dir']", tmp_path)
    assert bad.returncode == 1 and "no-such-dir" in bad.stderr
    assert marker.read_text() == "yes"


def test_entry_point_waits_for_other_threads(tmp_path: Path) -> None:
    """With another thread still working, exit the normal way so its work is not cut short."""
    marker = tmp_path / "thread-done"
    worker = (
        "import threading, time\n"
        f"def work():\n    time.sleep(0.5); open({str(marker)!r}, 'w').write('done')\n"
        "threading.Thread(target=work).start()\n"
        "sys.argv = ['reconciler', '--version']"
    )
    result = _console(worker, tmp_path)
    assert result.returncode == 0
    assert marker.read_text() == "done"


def test_entry_point_many_lines_into_a_pipe_arrive_whole(tmp_path: Path) -> None:
    """Buffered output is flushed before the hard exit."""
    result = _console("sys.argv = ['reconciler', '--help']", tmp_path)
    assert result.returncode == 0
    assert result.stdout.rstrip().splitlines()[-1].strip()  # the last command line of the help text
    assert "validate" in result.stdout and "apply" in result.stdout


READ_COMMANDS = [("get", "agents"), ("history",), ("runs", "list"), ("experiments", "list"), ("drift", str(REPO / "manifests")), ("export",)]


def test_a_read_of_a_database_file_that_does_not_exist_says_so(cli_run, tmp_path: Path) -> None:
    """A mistyped --db reads as an empty state (as a first plan must); each read command says on
    stderr that there is no database there, exits 0 and creates nothing. An existing database that
    holds nothing gets no note."""
    missing = tmp_path / "typo" / "state.db"
    for command in READ_COMMANDS:
        code, out, err = cli_run(*command, "--db", f"sqlite:///{missing}")
        assert code == 0, (command, err)
        assert err == f"note: no database at {missing}: nothing has been applied there yet (check --db and the directory)\n", command
        assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    for command in READ_COMMANDS:
        code, out, err = cli_run(*command, "--db", f"sqlite:///{empty}")
        assert (code, err) == (0, ""), command


def test_the_note_names_the_default_database(cli_run, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECONCILER_DATABASE_URL", raising=False)
    code, out, err = cli_run("get", "agents")
    assert (code, out) == (0, "No resources found.\n")
    assert err.startswith("note: no database at .reconciler/state.db:")
