"""``Opening``: sources open a few at a time, in turn; one that hangs stops counting."""

from __future__ import annotations

import asyncio

import pytest

from collector.core.backoff import Opening
from tests.fixtures._ports import until


async def test_at_most_at_once_in_turn() -> None:
    opening = Opening(3, patience_s=60)
    inside, most, order = 0, 0, []
    go = asyncio.Event()

    async def open_source(i: int) -> None:
        nonlocal inside, most
        async with opening.slot():
            order.append(i)
            inside += 1
            most = max(most, inside)
            await go.wait()
            inside -= 1

    tasks = [asyncio.create_task(open_source(i)) for i in range(10)]
    await until(lambda: opening.running == 3 and opening.waiting == 7, 5, "three opening, seven waiting")
    assert order == [0, 1, 2]
    go.set()
    await asyncio.gather(*tasks)
    assert most == 3
    assert order == list(range(10))  # first come, first served
    assert (opening.running, opening.waiting) == (0, 0)


async def test_a_hanging_open_stops_counting_after_its_patience() -> None:
    opening = Opening(1, patience_s=0.2)
    hang = asyncio.Event()
    answered = asyncio.Event()

    async def switched_off() -> None:
        async with opening.slot():
            await hang.wait()  # a connect to a machine that is off: no answer until the time-out

    async def answering() -> None:
        async with opening.slot():
            answered.set()

    loop = asyncio.get_running_loop()
    off = asyncio.create_task(switched_off())
    await until(lambda: opening.running == 1, 5, "the hanging open holds the slot")
    start = loop.time()
    on = asyncio.create_task(answering())
    await asyncio.wait_for(answered.wait(), 5)
    waited = loop.time() - start
    assert 0.1 <= waited < 1.0  # it waited for the patience, not for the hanging open
    await on
    hang.set()
    await off
    assert (opening.running, opening.waiting) == (0, 0)
    # the late open gave back nothing twice: still one slot
    first = asyncio.Event()
    second = asyncio.Event()

    async def hold(flag: asyncio.Event) -> None:
        async with opening.slot():
            flag.set()
            await asyncio.sleep(0.05)

    a, b = asyncio.create_task(hold(first)), asyncio.create_task(hold(second))
    await asyncio.wait_for(first.wait(), 5)
    assert not second.is_set() and opening.running == 1
    await asyncio.gather(a, b)


async def test_failed_and_cancelled_opens_give_their_slot_back() -> None:
    opening = Opening(1, patience_s=60)

    with pytest.raises(ConnectionRefusedError):
        async with opening.slot():
            raise ConnectionRefusedError  # the machine restarts: refused at once

    holder_in = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with opening.slot():
            holder_in.set()
            await release.wait()

    async def waiter() -> None:
        async with opening.slot():
            pass

    h = asyncio.create_task(holder())
    await holder_in.wait()
    w = asyncio.create_task(waiter())
    await until(lambda: opening.waiting == 1, 5, "a waiting open")
    w.cancel()  # a reload removes the source while it waits its turn
    with pytest.raises(asyncio.CancelledError):
        await w
    h.cancel()  # and one that is opening
    with pytest.raises(asyncio.CancelledError):
        await h
    assert (opening.running, opening.waiting) == (0, 0)
    async with asyncio.timeout(1):
        async with opening.slot():
            assert opening.running == 1


def test_at_once_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Opening(0, patience_s=1)
