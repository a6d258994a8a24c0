"""One rate limiter per provider per process, shared by every run, experiment arm and ``test``.

A provider's ``rate_limit: {requests_per_minute, tokens_per_minute}`` becomes aiolimiter leaky
buckets. Runs execute in event loops of their own (``reconciler run`` one after another, ``watch``
in threads at once), and an aiolimiter bucket belongs to one loop, so the buckets live on a private
loop in a daemon thread and each request acquires there: one bucket really is shared.

A 429 with Retry-After holds the provider's limiter back for that long: every request to the
provider waits, not only the one that was told (that holds for providers without a declared limit
too). Tokens are charged before a request by an estimate (4 characters a token) and the rest once the
answer says how many it used, so the rate holds over time without knowing the tokenizer.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Coroutine
from typing import Any

from reconciler.llm.ports import ProviderConfig, RateLimit

PERIOD_SECONDS = 60.0  # the limits are per minute (tests shorten it)
MAX_HOLD_SECONDS = 120.0  # a Retry-After beyond this is not trusted (the runner caps it the same way)
CHARS_PER_TOKEN = 4


class _LimiterLoop:
    """The event loop the buckets live on (started on first use, a daemon thread)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="reconciler-rate-limits", daemon=True).start()
                self._loop = loop
            return self._loop

    async def run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Await ``coro`` on the limiter loop from any other loop (cancelling one cancels the other)."""
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop()))


_home = _LimiterLoop()


class ProviderLimiter:
    """The requests and tokens buckets of one provider, and its hold after a 429."""

    def __init__(self, name: str, limit: RateLimit | None) -> None:
        from aiolimiter import AsyncLimiter

        self.name = name
        self.limit = limit
        rpm = limit.requests_per_minute if limit else None
        tpm = limit.tokens_per_minute if limit else None
        # aiolimiter's leaky bucket: up to the limit at once, then at the limit's pace
        self.requests = AsyncLimiter(rpm, PERIOD_SECONDS) if rpm else None
        self.tokens = AsyncLimiter(tpm, PERIOD_SECONDS) if tpm else None
        self._hold_until = 0.0  # time.monotonic()
        self._guard = threading.Lock()

    def hold(self, seconds: float) -> None:
        """Hold every request to this provider back for ``seconds`` (a 429's Retry-After)."""
        if seconds <= 0:
            return
        with self._guard:
            self._hold_until = max(self._hold_until, time.monotonic() + min(seconds, MAX_HOLD_SECONDS))

    def held_for(self) -> float:
        with self._guard:
            return max(0.0, self._hold_until - time.monotonic())

    async def _held(self) -> None:
        while (wait := self.held_for()) > 0:
            await asyncio.sleep(wait)

    async def acquire(self, estimated_tokens: int = 0) -> None:
        """Wait until a request may be sent: past any hold, then a request and the estimated tokens."""
        await self._held()
        if self.requests is not None:
            await _home.run(self.requests.acquire(1))
        await self._charge(estimated_tokens)
        await self._held()  # a 429 that arrived meanwhile holds this request too

    async def settle(self, used_tokens: int, estimated_tokens: int) -> None:
        """Charge what the answer used beyond the estimate (the next request of this caller waits for it)."""
        await self._charge(used_tokens - estimated_tokens)

    async def _charge(self, tokens: int) -> None:
        if self.tokens is None or tokens <= 0:
            return
        await _home.run(self.tokens.acquire(min(tokens, self.tokens.max_rate)))


_limiters: dict[str, ProviderLimiter] = {}
_guard = threading.Lock()


def limiter_for(provider: ProviderConfig) -> ProviderLimiter:
    """The process's limiter for ``provider`` (by name); a changed rate_limit replaces its buckets,
    keeping a hold in force."""
    with _guard:
        current = _limiters.get(provider.name)
        if current is not None and current.limit == provider.rate_limit:
            return current
        fresh = ProviderLimiter(provider.name, provider.rate_limit)
        if current is not None:
            fresh.hold(current.held_for())
        _limiters[provider.name] = fresh
        return fresh


def estimate_tokens(*texts: str) -> int:
    """A rough token count of the text a request sends (no tokenizer needed; settled afterwards)."""
    return math.ceil(sum(len(t) for t in texts) / CHARS_PER_TOKEN)
