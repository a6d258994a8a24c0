"""The two tools under test behind one small interface: start from an empty state, plan, apply.

Each step runs the real command line as a child process, exactly as a user or CI would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bench.measure import Timing, run_timed

REPO = Path(__file__).resolve().parent.parent
NO_CACHE_ENV = "RECONCILER_NO_CACHE"


class Tool(Protocol):
    name: str
    before: Path  # the configuration to apply into an empty state
    after: Path  # the same after changes

    def reset(self, workdir: Path) -> None: ...
    def plan(self, config: Path, expect_changes: bool, *, cache: bool = True) -> Timing: ...
    def apply(self, config: Path) -> Timing: ...


def reconciler_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user has: this checkout importable, bytecode caching on."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONDONTWRITEBYTECODE", "RECONCILER_DATABASE_URL"}}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def reconciler_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


class Reconciler:
    """``reconciler plan|apply`` against a fresh database and an empty parse cache per repetition,
    so the first apply reads every file cold, as on a machine that never saw them."""

    def __init__(self, name: str, new_database: Callable[[Path], str], env: dict[str, str], before: Path, after: Path) -> None:
        self.name = name
        self.before, self.after = before, after
        self._new_database = new_database
        self._env = env
        self._db = ""
        self._workdir = Path(".")

    def reset(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        self._db = self._new_database(workdir)
        cache = workdir / "parse-cache"
        shutil.rmtree(cache, ignore_errors=True)
        self._env = {**self._env, "RECONCILER_CACHE_DIR": str(cache)}

    def plan(self, config: Path, expect_changes: bool, *, cache: bool = True) -> Timing:
        argv = reconciler_argv("plan", str(config), "--db", self._db, "--detailed-exitcode")
        env = self._env if cache else {**self._env, NO_CACHE_ENV: "1"}
        return run_timed(argv, cwd=self._workdir, env=env, ok_codes=(2,) if expect_changes else (0,))

    def apply(self, config: Path) -> Timing:
        # --no-validate: the post-apply provider probe would call the (fictitious) provider endpoints;
        # Terraform has no such step
        argv = reconciler_argv("apply", str(config), "--db", self._db, "--auto-approve", "--no-validate")
        return run_timed(argv, cwd=self._workdir, env=self._env)


def sqlite_database(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'state.db'}"


def terraform_version() -> str | None:
    exe = shutil.which("terraform")
    if exe is None:
        return None
    out = subprocess.run([exe, "version"], capture_output=True, text=True, env=terraform_env(), check=False).stdout
    return out.splitlines()[0].removeprefix("Terraform ").strip() if out else None


def terraform_env() -> dict[str, str]:
    """No update checks (there is no network) and an empty CLI configuration."""
    config = REPO / "bench" / "out" / "empty.tfrc"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.touch()
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(config), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}


class Terraform:
    """``terraform plan|apply`` in a working directory whose *.tf.json files are swapped per step,
    with the local state file kept, as when a commit changes the configuration."""

    def __init__(self, name: str, before: Path, after: Path) -> None:
        self.name = name
        self.before, self.after = before, after
        self._env = terraform_env()
        self._workdir = Path(".")

    def reset(self, workdir: Path) -> None:
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        self._workdir = workdir

    def _use(self, config: Path) -> None:
        for old in self._workdir.glob("*.tf.json"):
            old.unlink()
        for f in config.glob("*.tf.json"):
            os.link(f, self._workdir / f.name) if _same_device(f, self._workdir) else shutil.copy(f, self._workdir)
        if not (self._workdir / ".terraform.lock.hcl").exists() and not (self._workdir / ".terraform").exists():
            run_timed(["terraform", "init", "-input=false", "-no-color"], cwd=self._workdir, env=self._env)

    def plan(self, config: Path, expect_changes: bool, *, cache: bool = True) -> Timing:
        self._use(config)
        argv = ["terraform", "plan", "-input=false", "-no-color", "-detailed-exitcode"]
        return run_timed(argv, cwd=self._workdir, env=self._env, ok_codes=(2,) if expect_changes else (0,))

    def apply(self, config: Path) -> Timing:
        self._use(config)
        return run_timed(["terraform", "apply", "-input=false", "-no-color", "-auto-approve"], cwd=self._workdir, env=self._env)


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def unique_database_name() -> str:
    return f"bench_{uuid.uuid4().hex[:12]}"
