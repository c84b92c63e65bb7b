"""A fault-injecting TCP proxy: a poor 4G cell between the Box and the broker (our own Toxiproxy).

`FaultProxy` listens (127.0.0.1:0 unless told otherwise) and forwards every connection to a target, on an
asyncio loop of its own thread. Faults are set from the test's thread at any time, take effect before the
setter returns, and apply to open connections as well as new ones; where it makes sense, per direction
(`Direction.UP` is client -> target, `DOWN` target -> client):

- latency with jitter: each chunk is delivered ``delay + uniform(0, jitter)`` seconds after it was read,
  never reordered (TCP does not reorder: a chunk never overtakes the one before it);
- bandwidth cap: a token bucket in bytes per second, shared by all connections in that direction;
- stall: nothing is read or delivered, connections stay open (a half-open path: the peers' windows fill up);
- blackhole: bytes are read and dropped; a connection accepted while UP is blackholed never reaches the
  target (its SYN was "lost"), and stays a dead connection even when the blackhole is lifted;
- refuse: the listening socket is closed, connecting gives ECONNREFUSED; lifting it listens on the same port;
- reset_all: every open connection is reset on both sides (SO_LINGER 0, then close: an RST);
- close_all: every open connection is closed gracefully on both sides (FIN).

Counts: `upstream_bytes`, `downstream_bytes` (delivered), `dropped_bytes`, `connections` (accepted), `active`.
It does not: reorder, duplicate or corrupt bytes, or shape anything below TCP (for that, tests.support.wan).
`TokenBucket` is the pure part (no I/O, a clock passed in).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

T = TypeVar("T")
CHUNK = 65536


class Direction(enum.Flag):
    UP = 1  # client -> target
    DOWN = 2  # target -> client
    BOTH = UP | DOWN


class TokenBucket:
    """A token bucket: `rate` bytes per second, at most `burst` bytes at once. Pure: the caller passes the time."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst = rate, burst
        self._tokens, self._last = float(burst), now

    def take(self, n: int, now: float) -> float:
        """Take `n` (<= burst) bytes' worth of tokens if there are enough and return 0, else the seconds to wait."""
        if not 0 < n <= self.burst:
            raise ValueError(f"take 1..{self.burst} bytes at a time, not {n}")
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate


@dataclass
class _Shape:
    """The faults of one direction."""

    delay: float = 0.0
    jitter: float = 0.0
    bucket: TokenBucket | None = None
    blackhole: bool = False
    flowing: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while stalled


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side and (unless blackholed at accept) the target's."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.target) if w is not None]


class FaultProxy:
    """Listen on listen_host:listen_port (0: any free port) and forward to target_host:target_port."""

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = listen_port
        self.upstream_bytes = 0
        self.downstream_bytes = 0
        self.dropped_bytes = 0
        self.connections = 0
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._shapes: dict[Direction, _Shape] = {}
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> Self:
        self._thread.start()

        async def setup() -> None:
            self._shapes = {Direction.UP: _Shape(), Direction.DOWN: _Shape()}
            for shape in self._shapes.values():
                shape.flowing.set()
            await self._listen()

        try:
            self._run(setup)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()
            raise
        return self

    def stop(self) -> None:
        async def teardown() -> None:
            if self._server is not None:
                self._server.close()
            self._drop_all(reset=False)  # their pumps end, and so do their handlers
            if self._handlers:
                _, late = await asyncio.wait(self._handlers, timeout=5)
                for task in late:
                    task.cancel()

        if self._thread.is_alive():
            self._run(teardown)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._links)

    # ---- faults (call from any thread) ------------------------------------------------------------------
    def set_latency(self, delay: float, jitter: float = 0.0, direction: Direction = Direction.BOTH) -> None:
        """Deliver each chunk `delay` + uniform(0, `jitter`) seconds after it was read (0, 0: no latency)."""
        def apply(s: _Shape) -> None:
            s.delay, s.jitter = delay, jitter
        self._each(direction, apply)

    def set_bandwidth(self, rate: float | None, direction: Direction = Direction.BOTH,
                      burst: int | None = None) -> None:
        """Cap at `rate` bytes per second (None: no cap); `burst` defaults to a tenth of a second's worth."""
        size = burst or max(512, min(CHUNK, int((rate or 0) / 10)))

        def apply(s: _Shape) -> None:
            s.bucket = TokenBucket(rate, size, self._loop.time()) if rate else None
        self._each(direction, apply)

    def stall(self, direction: Direction = Direction.BOTH) -> None:
        """Stop reading and delivering; connections stay open."""
        self._each(direction, lambda s: s.flowing.clear())

    def resume(self, direction: Direction = Direction.BOTH) -> None:
        """End a stall: what was held back flows on."""
        self._each(direction, lambda s: s.flowing.set())

    def blackhole(self, on: bool = True, direction: Direction = Direction.BOTH) -> None:
        """Read and drop every byte (and, for UP, never connect new connections to the target)."""
        def apply(s: _Shape) -> None:
            s.blackhole = on
        self._each(direction, apply)

    def refuse(self, on: bool = True) -> None:
        """Refuse new connections (nobody listens on the port) or, with on=False, accept them again."""
        async def apply() -> None:
            if on and self._server is not None:
                self._server.close()  # closes the listening socket now; open connections stay
                self._server = None
            elif not on and self._server is None:
                await self._listen()
        self._run(apply)

    def reset_all(self) -> int:
        """Reset every open connection, both sides (RST); returns how many there were."""
        return self._call(lambda: self._drop_all(reset=True))

    def close_all(self) -> int:
        """Close every open connection gracefully, both sides (FIN); returns how many there were."""
        return self._call(lambda: self._drop_all(reset=False))

    def heal(self) -> None:
        """Lift every fault: no latency, no cap, flowing, no blackhole, accepting."""
        self.set_latency(0.0)
        self.set_bandwidth(None)
        self.blackhole(False)
        self.resume()
        self.refuse(False)

    # ---- the loop's side --------------------------------------------------------------------------------
    def _run(self, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run `coro_fn()` on the proxy's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(10)

    def _call(self, fn: Callable[[], T]) -> T:
        """Call `fn` on the proxy's loop and return its result."""
        async def call() -> T:
            return fn()

        return self._run(call)

    def _each(self, direction: Direction, apply: Callable[[_Shape], None]) -> None:
        def on_loop() -> None:
            for d, shape in self._shapes.items():
                if d & direction:
                    apply(shape)
        self._call(on_loop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        self._links.add(link)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            if self._shapes[Direction.UP].blackhole:
                await self._pump(reader, None, Direction.UP)  # accepted, never forwarded
                return
            try:
                t_reader, link.target = await asyncio.open_connection(*self.target)
            except OSError:
                self._drop(link, reset=True)  # the target refused: so do we
                return
            async with asyncio.TaskGroup() as tg:
                link.tasks.add(tg.create_task(self._pump(reader, link.target, Direction.UP)))
                link.tasks.add(tg.create_task(self._pump(t_reader, writer, Direction.DOWN)))
        except (OSError, ExceptionGroup):
            self._drop(link, reset=True)  # one side failed: the other sees a reset
        finally:
            self._drop(link, reset=False)
            self._handlers.discard(handler)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, d: Direction) -> None:
        """Forward one direction: a reader stage (stall, blackhole, latency) and a writer stage (cap, count)."""
        shape = self._shapes[d]
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=64)
        last = 0.0

        async def read() -> None:
            nonlocal last
            while True:
                await shape.flowing.wait()
                data = await src.read(CHUNK)
                if not data:
                    await queue.put(None)
                    return
                if shape.blackhole or dst is None:
                    self.dropped_bytes += len(data)
                    continue
                last = max(last, self._loop.time() + shape.delay + self._rng.uniform(0.0, shape.jitter))
                await queue.put((last, data))

        async def write() -> None:
            assert dst is not None
            while (item := await queue.get()) is not None:
                due, data = item
                if (left := due - self._loop.time()) > 0:
                    await asyncio.sleep(left + 0.001)  # the loop may wake a clock tick early: never deliver early
                await self._deliver(dst, data, shape, d)
            if dst.can_write_eof():
                dst.write_eof()  # pass the half-close on

        if dst is None:
            await read()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(read())
            tg.create_task(write())

    async def _deliver(self, dst: asyncio.StreamWriter, data: bytes, shape: _Shape, d: Direction) -> None:
        view = memoryview(data)
        while view:
            await shape.flowing.wait()
            if shape.blackhole:
                self.dropped_bytes += len(view)
                return
            bucket = shape.bucket
            piece = view[: bucket.burst] if bucket else view
            if bucket and (wait := bucket.take(len(piece), self._loop.time())) > 0:
                await asyncio.sleep(wait)
                continue  # then look again: stalled, blackholed or re-capped meanwhile?
            dst.write(piece)
            await dst.drain()
            if d is Direction.UP:
                self.upstream_bytes += len(piece)
            else:
                self.downstream_bytes += len(piece)
            view = view[len(piece) :]

    def _drop_all(self, reset: bool) -> int:
        links = list(self._links)
        for link in links:
            self._drop(link, reset)
        return len(links)

    def _drop(self, link: _Link, reset: bool) -> None:
        """Close both sides of a link (an RST when `reset`) and cancel its pumps."""
        if link not in self._links:
            return
        self._links.discard(link)
        for task in link.tasks:
            task.cancel()
        for w in link.writers():
            if reset:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
            else:
                w.close()
