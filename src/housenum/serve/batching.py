"""Opportunistic batching: requests that arrive while the model is busy run together as one batch.

Nothing waits on a timer, so a lone request runs at once; under load the queue fills while the
previous batch runs and the next batch takes all of it (up to `max_batch`). The reader costs about
15 ms for one photo but 6 ms per photo in a batch of 8 (benchmarks/serve_load.py), so this pays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """`await submit(item)` -> `run(batch)[i]`; `run` is a blocking function of a list, called in a
    worker thread, one batch at a time."""

    def __init__(self, run: Callable[[list[Item]], list[Result]], max_batch: int = 32,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.run = run
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Item) -> Result:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await run_in_threadpool(self.run, [item for item, _ in batch])
            except Exception as e:  # the batch failed as a whole: every request in it gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # a client that went away has cancelled its future
                    future.set_result(result)
