"""Background loops never end silently: a crash is reported and the loop runs again."""

from __future__ import annotations

import asyncio
import contextlib

from sdparta.supervise import supervised


async def test_a_crashing_loop_is_reported_and_restarted_until_it_returns() -> None:
    runs: list[int] = []
    crashes: list[tuple[str, str]] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise KeyError("boom")

    await asyncio.wait_for(supervised("demo", loop, lambda n, e: crashes.append((n, e)), restart_after=0.01), 10)
    assert len(runs) == 3
    assert crashes == [("demo", "KeyError: 'boom'")] * 2


async def test_a_failing_reporter_does_not_stop_the_restart() -> None:
    runs: list[int] = []

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("bug")

    def reporter(name: str, error: str) -> None:
        raise ValueError("the reporter is broken too")

    await asyncio.wait_for(supervised("demo", loop, reporter, restart_after=0.01), 10)
    assert len(runs) == 2


async def test_cancellation_ends_the_loop() -> None:
    started = asyncio.Event()

    async def loop() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervised("demo", loop, lambda n, e: None))
    await started.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
