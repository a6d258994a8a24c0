"""On SQLite, distributing a run and starting a worker are refused with what to do instead: exit 1,
nothing written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.runs.conftest import CONFIG, RUN


def test_run_distribute_on_sqlite_is_refused_and_the_run_stays_pending(write_manifests, cli_run, sqlite_url: str) -> None:
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-validate")[0] == 0
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    before = db_file.read_bytes()
    code, out, err = cli_run("run", "sample", "--db", sqlite_url, "--distribute", "--wait")
    assert (code, out) == (1, "")
    assert err.startswith("error: run --distribute needs a PostgreSQL state database; sqlite")
    assert "hint: point --db or $RECONCILER_DATABASE_URL at PostgreSQL" in err and "reconciler run NAME" in err
    assert "Traceback" not in err
    assert db_file.read_bytes() == before
    (row,) = json.loads(cli_run("runs", "list", "--db", sqlite_url, "-o", "json")[1])
    assert row["status"] == "pending"


def test_worker_on_sqlite_is_refused_without_creating_a_database(cli_run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing-here.db'}"
    code, out, err = cli_run("worker", "--db", url)
    assert (code, out) == (1, "")
    assert err.startswith("error: reconciler worker needs a PostgreSQL state database")
    assert not (tmp_path / "nothing-here.db").exists()
    code, _, err = cli_run("worker")  # the default database is a SQLite file too
    assert code == 1 and "needs a PostgreSQL state database" in err
    assert not Path(".reconciler").exists()


def test_distribute_options_need_distribute(cli_run, sqlite_url: str) -> None:
    code, _, err = cli_run("run", "sample", "--db", sqlite_url, "--wait")
    assert code == 2 and "--wait, --chunk-size and --queue go with --distribute" in err


def test_a_local_run_and_runs_show_never_import_the_task_engine(write_manifests, sqlite_url: str) -> None:
    import subprocess
    import sys

    from tests.runs.conftest import STUB_CONFIG, keyword_classifier
    from tests.stub_openai import StubServer

    stub = StubServer(lambda request, n: keyword_classifier(request["messages"][-1]["content"])).__enter__()
    root = write_manifests({"config.yaml": STUB_CONFIG.replace("BASE", stub.base_url), "run.yaml": RUN})
    probe = (
        "import sys\nfrom reconciler.cli import main\n"
        "for argv in (['apply', R, '--db', D, '--auto-approve', '--no-validate'], ['run', 'sample', '--db', D],\n"
        "             ['runs', 'show', 'sample', '--db', D]):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('procrastinate') or m.startswith('reconciler.runs.distributed.')))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", f"R = {str(root)!r}; D = {sqlite_url!r}\n" + probe], capture_output=True, text=True, check=True)
    finally:
        stub.__exit__()
    assert "Run sample: completed" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "['reconciler.runs.distributed.chunks', 'reconciler.runs.distributed.store']"
