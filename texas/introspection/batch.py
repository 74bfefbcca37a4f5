"""Introspection decisions queued during one event-loop iteration, run back to back in the next.

Between aiohttp's work for one request and the next, the code and data a decision needs (the
interpreter's, OpenSSL's) have left the CPU's caches: an RS256 verify that takes 21 µs in a
loop costs about 45 µs of a request's CPU in the server. Run together, each decision finds
them warm. `bench/run.py` on one core, before and after in one run: tokens seen before 16,300
-> 20,100 req/s, every token new 7,100 -> 9,800 req/s, p99 lower in both. Under callgrind a
request counts about 14,000 more instructions (the future and the extra loop turns), which is
why bench/instructions.py alone cannot show the gain.

Each call runs in its caller's context and gets its own result or exception. The wait is one
loop iteration: a lone request pays a few microseconds.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Queue = list[tuple["asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]]


class Batch:
    __slots__ = ("_loop", "_queue")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: _Queue = []

    def run(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`call(*args)` with the other calls queued in this iteration, in the next one."""
        loop = self._loop
        # asyncio.get_running_loop() costs a getpid() system call on Python 3.11 (about 2 µs
        # of a request in the server); a loop that is running is the one calling, since texas
        # runs one loop, in one thread, at a time
        if loop is None or not loop.is_running():
            loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queue or loop is not self._loop:  # a queue left by a closed loop is dropped
            self._loop, self._queue = loop, []
            loop.call_soon(self._drain, self._queue)
        # in the caller's context: a log line names the caller's request id, not the first one's
        self._queue.append((future, contextvars.copy_context(), call, args))
        return future

    def _drain(self, queue: _Queue) -> None:
        if queue is self._queue:
            self._queue = []
        for future, context, call, args in queue:
            if future.cancelled():  # its request is gone
                continue
            try:
                result = context.run(call, *args)
            except Exception as e:  # the caller's to judge: a verdict, or a fault it reports
                future.set_exception(e)
            else:
                future.set_result(result)
