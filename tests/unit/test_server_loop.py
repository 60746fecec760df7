"""The server backend's event loop: a failed request takes its siblings down with it, and a closing
loop ends what was left on it (no task destroyed pending with its loop closed)."""

from __future__ import annotations

import asyncio

import pytest

from engine.backends.server.pool import LoopThread, gather_all


def test_a_failed_request_cancels_its_siblings_and_waits_for_them():
    ended: list[str] = []

    async def slow(name: str) -> str:
        try:
            await asyncio.sleep(30)
        finally:
            ended.append(name)
        return name

    async def fails() -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("the server stopped answering")

    async def go() -> None:
        with pytest.raises(RuntimeError, match="stopped answering"):
            await gather_all(slow("a"), fails(), slow("b"))
        assert sorted(ended) == ["a", "b"]  # both ended before the error reached the caller

    lt = LoopThread("test")
    try:
        lt.run(go(), timeout=10)
    finally:
        lt.close()


def test_gather_all_returns_every_result_in_order():
    async def value(x: int) -> int:
        await asyncio.sleep(0.001 * (3 - x))
        return x

    lt = LoopThread("test")
    try:
        assert lt.run(gather_all(*(value(i) for i in range(3))), timeout=10) == [0, 1, 2]
    finally:
        lt.close()


def test_closing_the_loop_ends_the_tasks_left_on_it():
    ended = []

    async def left_behind() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            ended.append(True)

    lt = LoopThread("test")
    lt.submit(left_behind())
    lt.run(asyncio.sleep(0.05), timeout=5)  # it is running
    lt.close()
    assert ended == [True] and lt.loop.is_closed()
