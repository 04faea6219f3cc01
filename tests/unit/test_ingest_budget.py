"""The bytes ingest's reads in flight may hold together."""

from __future__ import annotations

import asyncio

from ingest.handlers import ByteBudget


async def test_reads_wait_for_room_and_a_huge_one_waits_to_be_alone() -> None:
    budget = ByteBudget(10)
    log: list[str] = []

    async def read(name: str, size: int, release: asyncio.Event) -> None:
        async with budget.hold(size):
            log.append(f"+{name}")
            await release.wait()
        log.append(f"-{name}")

    first, second, huge = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(read("a", 6, first)),
        asyncio.create_task(read("b", 6, second)),
        asyncio.create_task(read("huge", 50, huge)),
    ]
    await asyncio.sleep(0.01)
    assert log == ["+a"], "6 + 6 is over 10: b waits"
    first.set()
    await asyncio.sleep(0.01)
    assert log == ["+a", "-a", "+b"], "the huge read waits until nothing is held"
    assert budget.held == 6
    second.set()
    await asyncio.sleep(0.01)
    assert log[-1] == "+huge" and budget.held == 50, "alone, it may exceed the budget"
    huge.set()
    await asyncio.gather(*tasks)
    assert budget.held == 0
