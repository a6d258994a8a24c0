"""Fixtures for the GitOps tests: a small manifest set and real git repositories."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

PROVIDER = """
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: {name}{annotations}}}
spec: {{type: openai, base_url: "http://127.0.0.1:9/v1"}}
"""
AGENT = """
apiVersion: reconciler/v1
kind: Agent
metadata: {{name: {name}{annotations}}}
spec: {{provider: {provider}, model_name: m, system_prompt: "{prompt}", temperature: {temperature}}}
"""
TASK = """
apiVersion: reconciler/v1
kind: Task
metadata: {{name: {name}}}
spec: {{response_schema: {{type: object}}}}
"""
ASSIGNMENT = """
apiVersion: reconciler/v1
kind: Assignment
metadata: {{name: {name}}}
spec: {{agent: {agent}, task: {task}}}
"""


def _annotations(protected: bool) -> str:
    return ', annotations: {"reconciler/prevent-destroy": "true"}' if protected else ""


def provider(name: str = "openai", protected: bool = False) -> str:
    return PROVIDER.format(name=name, annotations=_annotations(protected))


def agent(name: str, provider: str = "openai", temperature: float = 0.2, prompt: str = "be brief", protected: bool = False) -> str:
    return AGENT.format(name=name, provider=provider, temperature=temperature, prompt=prompt, annotations=_annotations(protected))


def task(name: str) -> str:
    return TASK.format(name=name)


def assignment(name: str, agent: str, task: str) -> str:
    return ASSIGNMENT.format(name=name, agent=agent, task=task)


def config(agents: dict[str, float] | None = None, protected: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
    """A provider, one agent per entry (name -> temperature), a task and one assignment per agent."""
    agents = {"triage": 0.2} if agents is None else agents
    docs = {"providers.yaml": provider("openai", "provider/openai" in protected), "tasks.yaml": task("classify")}
    docs["agents.yaml"] = "---".join(agent(n, temperature=t, protected=f"agent/{n}" in protected) for n, t in agents.items()) or "# none\n"
    docs["assignments.yaml"] = "---".join(assignment(f"{n}-classify", n, "classify") for n in agents) or "# none\n"
    return docs


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
}


class GitRepo:
    """A real git repository in a temporary directory; ``commit(files, message)`` writes and commits."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        out = subprocess.run(["git", *args], cwd=self.root, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def write(self, files: dict[str, str | None], under: str = "manifests") -> None:
        for name, text in files.items():
            path = self.root / under / name
            if text is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def commit(self, files: dict[str, str | None], message: str, under: str = "manifests") -> str:
        self.write(files, under)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


class WatchProcess:
    """``reconciler watch --json`` in a subprocess; events are read from its stdout as they come."""

    def __init__(self, *args: str, cwd: Path) -> None:
        import queue
        import sys
        import threading

        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", "--json", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import json

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def drain(self) -> list[dict]:
        """The events read since the last look, without waiting (kept in ``seen`` too)."""
        import queue

        out = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return out
            self.seen.append(event)
            out.append(event)

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:  # type: ignore[no-untyped-def]
        """The next event that satisfies ``predicate`` (a deadline only to fail instead of hanging)."""
        import queue
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event; seen: {self.seen}; stderr: {self.stop_now()}")

    def stop_now(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=30)[1]

    def terminate(self) -> int:
        """SIGTERM, then the exit code once it has stopped cleanly."""
        import signal

        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can be taken down and brought back on the same port,
    to play "the database is briefly unreachable" against a real PostgreSQL server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket

        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener = None
        self.conns: list = []

    def up(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:  # type: ignore[no-untyped-def]
        import socket
        import threading

        listener.settimeout(0.1)
        while self.listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:  # type: ignore[no-untyped-def]
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self) -> None:
        import socket

        if self.listener is not None:
            listener, self.listener = self.listener, None
            listener.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns = []
