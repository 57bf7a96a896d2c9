"""The node's SFU worker processes: start, assign rooms (least loaded), watch, restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

import msgspec

from sfu import ipc
from sfu.worker import WorkerConfig

log = logging.getLogger("huddle.sfu.pool")
RESTART_DELAY_S: Final = 0.2
STOP_TIMEOUT_S: Final = 5.0

LostHandler = Callable[["WorkerHost", set[str]], None]


class WorkerHost:
    """One worker process, seen from the node: a RoomHost over IPC."""

    def __init__(
        self,
        index: int,
        process: asyncio.subprocess.Process,
        channel: ipc.NodeChannel,
    ) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        self.rooms: set[str] = set()
        self.participants = 0
        self.metrics: ipc.Metrics | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def load(self) -> tuple[int, int]:
        return (self.participants, len(self.rooms))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of the worker's room host (``sfu.ipc.RPCS``); every ``RoomHost``
        method not written out below is generated from the table as one of these."""
        request = ipc.make_request(method, self.channel.next_id(), args, kwargs)
        return await self.channel.call(request)

    if TYPE_CHECKING:  # the generated methods (see the loop below the class)

        def __getattr__(self, name: str) -> Callable[..., Any]: ...

    # Written out: they keep the node's view of the worker's load.

    async def join(
        self, room: str, identity: str, name: str, *, can_publish: bool, can_subscribe: bool
    ) -> str:
        participant = await self.call(
            "join", room, identity, name, can_publish=can_publish, can_subscribe=can_subscribe
        )
        self.rooms.add(room)
        self.participants += 1
        return str(participant)

    async def leave(self, participant: str) -> None:
        await self.call("leave", participant)
        self.participants = max(0, self.participants - 1)

    async def close_room(self, room: str) -> None:
        await self.call("close_room", room)
        self.rooms.discard(room)


def _remote(method: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def call(self: WorkerHost, *args: Any, **kwargs: Any) -> Any:
        return await self.call(method, *args, **kwargs)

    call.__name__ = call.__qualname__ = method
    return call


for _method in ipc.RPCS:
    if _method not in WorkerHost.__dict__:
        setattr(WorkerHost, _method, _remote(_method))


class WorkerPool:
    def __init__(
        self,
        count: int,
        config: WorkerConfig,
        *,
        module: str = "sfu.worker",
        on_event: Callable[
            [WorkerHost, ipc.Offer | ipc.Speakers | ipc.Metrics | ipc.Layers | ipc.Paused], None
        ],
        on_lost: LostHandler,
    ) -> None:
        self.count = count
        self.config = config
        self.module = module  # what the workers run: sfu.worker or a program calling its main
        self.workers: list[WorkerHost | None] = [None] * count
        self.restarts = 0
        self._on_event = on_event
        self._on_lost = on_lost
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for index in range(self.count):
            self.workers[index] = await self._spawn(index)
        self._watchers = [asyncio.create_task(self._watch(i)) for i in range(self.count)]

    async def _spawn(self, index: int) -> WorkerHost:
        node_end, worker_end = socket.socketpair()
        config = msgspec.structs.replace(self.config, index=index)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            "--fd",
            str(worker_end.fileno()),
            "--config",
            msgspec.json.encode(config).decode(),
            pass_fds=[worker_end.fileno()],
            stdin=asyncio.subprocess.DEVNULL,
        )
        worker_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=node_end)
        holder: list[WorkerHost] = []
        channel = ipc.NodeChannel(reader, writer, lambda event: self._on_event(holder[0], event))
        worker = WorkerHost(index, process, channel)
        holder.append(worker)
        log.info("sfu worker started", extra={"index": index, "pid": process.pid})
        return worker

    async def _watch(self, index: int) -> None:
        while not self._stopping:
            worker = self.workers[index]
            assert worker is not None
            waiters = [
                asyncio.ensure_future(worker.process.wait()),
                asyncio.ensure_future(worker.channel.closed.wait()),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if self._stopping:
                return
            log.warning("sfu worker lost; restarting", extra={"index": index, "pid": worker.pid})
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
            await worker.channel.close()
            self.workers[index] = None
            self._on_lost(worker, set(worker.rooms))
            while not self._stopping:
                await asyncio.sleep(RESTART_DELAY_S)
                try:
                    self.workers[index] = await self._spawn(index)
                    self.restarts += 1
                    break
                except OSError:
                    log.exception("sfu worker restart failed")

    def least_loaded(self) -> WorkerHost:
        alive = [w for w in self.workers if w is not None and not w.channel.closed.is_set()]
        if not alive:
            raise ipc.ChannelClosed("no SFU worker available")
        return min(alive, key=lambda w: w.load)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        for worker in self.workers:
            if worker is None:
                continue
            await worker.channel.close()  # EOF: the worker closes its rooms and exits
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
