"""Provider status changes as events, published while providers are validated.

The seed broadcast ``validation_update`` messages on a WebSocket; here any code can subscribe a
callback to ``provider_events`` (or pass its own ``EventBus``) and receives the same dicts:
``providers check --json`` prints them as JSON lines. ``watch`` does not subscribe: it polls the
providers' stored statuses after every apply and drift check and reports the changes in its own
events (``provider_status``), so it also sees validations another process ran.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]
Listener = Callable[[Event], None]


class EventBus:
    """A tiny synchronous publish/subscribe hub; a failing listener never stops the others."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add ``listener``; call the returned function to remove it again."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken subscriber must not break validation
                pass


provider_events = EventBus()


def validation_event(name: str, provider_id: str, status: str, error: str | None = None, validated_at: datetime | None = None, **extra: Any) -> Event:
    return {
        "event": "validation_update",
        "provider": name,
        "provider_id": provider_id,
        "validation_status": status,
        "validation_error": error,
        "validated_at": validated_at.isoformat(timespec="seconds") if validated_at else None,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **extra,
    }


def json_line(event: Event) -> str:
    return json.dumps(event, sort_keys=False, ensure_ascii=False, default=str)
