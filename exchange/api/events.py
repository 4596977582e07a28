"""The live event stream: what the node tells its listeners, plus the clock's turns, fanned
out to every open stream (Server-Sent Events, docs/api.md "The event stream").

Each stream has a bounded queue. A stream that falls that far behind is closed rather than
allowed to hold the node's memory (its client reconnects, and its ``Last-Event-ID`` tells
it that it missed events: ids count up by one per event).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import trio

from wattmesh.exchange.api.refusal import ApiRefused
from wattmesh.exchange.clock import open_interval
from wattmesh.exchange.community_file import Community

__all__ = ["CLOCK_EVENTS", "EventHub", "sse_frame"]

CLOCK_EVENTS = ("gate-passed", "interval-opened")  # interval; at every interval boundary
# Events that may come in floods (every order of every member): the same event with the
# same data is sent at most once per FLUSH_SECONDS.
COALESCED = ("book-changed",)
FLUSH_SECONDS = 0.5
QUEUE = 256  # events a stream may fall behind before it is closed
HEARTBEAT_SECONDS = 15.0  # a comment line keeps proxies and clients from timing out


def sse_frame(event_id: int, event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Events frame (the data is one line of JSON)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event.encode(), orjson.dumps(data))


class EventHub:
    """Publishes events to at most ``max_streams`` open streams."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.next_id = 1
        self._streams: dict[int, trio.MemorySendChannel[bytes]] = {}  # by stream number
        self._opened = 0
        self._pending: dict[tuple[str, bytes], tuple[str, dict[str, Any]]] = {}

    @property
    def streams(self) -> int:
        return len(self._streams)

    def publish(self, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` on every stream (a COALESCED one at the next flush); a stream
        whose queue is full is closed."""
        if event in COALESCED:
            self._pending[(event, orjson.dumps(data))] = (event, data)
            return
        self._send(event, data)

    async def flush(self) -> None:
        """Send the coalesced events every FLUSH_SECONDS. Runs until cancelled."""
        while True:
            await trio.sleep(FLUSH_SECONDS)
            pending, self._pending = self._pending, {}
            for event, data in pending.values():
                self._send(event, data)

    def _send(self, event: str, data: dict[str, Any]) -> None:
        frame = sse_frame(self.next_id, event, data)
        self.next_id += 1
        for number, send in list(self._streams.items()):
            try:
                send.send_nowait(frame)
            except trio.WouldBlock:  # too far behind: its frames() ends, the client retries
                del self._streams[number]
                send.close()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._streams[number]

    def open(self) -> tuple[int, trio.MemoryReceiveChannel[bytes]]:
        """A new stream: (its number, its queue); ``too-many-streams`` when
        ``max_streams`` are open."""
        if len(self._streams) >= self.max_streams:
            raise ApiRefused("too-many-streams", f"{self.max_streams} event streams are open")
        send, receive = trio.open_memory_channel[bytes](QUEUE)
        self._opened += 1
        self._streams[self._opened] = send
        return self._opened, receive

    async def frames(
        self, number: int, receive: trio.MemoryReceiveChannel[bytes]
    ) -> AsyncIterator[bytes]:
        """The frames of one stream, with a heartbeat comment when idle; ends when the
        hub closes the stream (or the client goes and the response is cancelled)."""
        yield b"retry: 2000\n\n"  # a client reconnects after 2 s
        try:
            while True:
                with trio.move_on_after(HEARTBEAT_SECONDS) as idle:
                    frame = await receive.receive()
                if idle.cancelled_caught:
                    yield b": heartbeat\n\n"
                else:
                    yield frame
        except trio.EndOfChannel:
            return
        finally:
            self.close(number)
            receive.close()

    def close(self, number: int) -> None:
        """Free stream ``number``'s slot (again is fine)."""
        send = self._streams.pop(number, None)
        if send is not None:
            send.close()

    async def tick(self, community: Community) -> None:
        """Publish each interval boundary as it passes: the gate of the interval that
        starts now, and the opening of the next one for orders. Runs until cancelled."""
        length = community.interval_ms
        while True:
            now = community.now_ms()
            boundary = open_interval(now, length)
            await trio.sleep(max(0.0, community.wall_seconds(boundary - now)))
            if community.now_ms() < boundary:
                continue  # woke early (rounding): sleep the rest
            self.publish("gate-passed", {"interval": boundary})
            self.publish("interval-opened", {"interval": boundary + length})

