"""Child process: run one ``reconciler`` command while recording every file it opens, every
directory it lists, every network call, subprocess and environment variable it touches.

Files and sockets are seen through an audit hook (``sys.addaudithook``), which Python raises for
every ``open``, ``socket.connect`` etc. whichever module does it; environment reads through a
recording stand-in for ``os.environ`` (``os.getenv`` reads it too). The record is written as JSON
to the path in argv[1]; the command follows.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, MutableMapping

RECORD: dict[str, list[object]] = {"open": [], "listdir": [], "network": [], "subprocess": [], "env": [], "env_enumerated": []}
_NETWORK_EVENTS = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto", "urllib.Request"}


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open":
        path = args[0]
        if isinstance(path, (str, bytes)):
            RECORD["open"].append(os.fsdecode(path))
    elif event in {"os.listdir", "os.scandir"}:
        RECORD["listdir"].append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else str(args[0]))
    elif event in _NETWORK_EVENTS:
        RECORD["network"].append([event, repr(args)[:200]])
    elif event in {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn"}:
        RECORD["subprocess"].append([event, repr(args)[:200]])


def _note(key: object) -> None:
    RECORD["env"].append(os.fsdecode(key) if isinstance(key, bytes) else str(key))


class RecordingEnviron(MutableMapping[str, str]):
    """os.environ that notes each variable read, and whether someone read all of them."""

    def __init__(self, real: MutableMapping[str, str]) -> None:
        self._real = real

    def __getitem__(self, key: str) -> str:
        _note(key)
        return self._real[key]

    def __contains__(self, key: object) -> bool:
        _note(key)
        return key in self._real

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        _note(key)
        return self._real.get(key, default)

    def __setitem__(self, key: str, value: str) -> None:
        self._real[key] = value

    def __delitem__(self, key: str) -> None:
        del self._real[key]

    def __iter__(self) -> Iterator[str]:
        RECORD["env_enumerated"].append(sys._getframe(1).f_code.co_filename)
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)

    def copy(self) -> dict[str, str]:
        RECORD["env_enumerated"].append(sys._getframe(1).f_code.co_filename)
        return dict(self._real)


def main() -> None:
    record_path, args = sys.argv[1], sys.argv[2:]
    os.environ = RecordingEnviron(os.environ)  # type: ignore[assignment]
    sys.addaudithook(_audit)
    code = 0
    try:
        from reconciler.cli import main as cli_main

        cli_main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        with open(record_path, "w", encoding="utf-8") as fh:
            json.dump({**RECORD, "exit_code": code}, fh)
    sys.exit(code)


if __name__ == "__main__":
    main()
