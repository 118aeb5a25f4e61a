"""EtcdStore's member bookkeeping that needs no etcd: endpoints, error reading, deadlines."""

from __future__ import annotations

import asyncio

import aetcd
import grpc
import pytest

from overnet.store.members import Members, bounded, describe, unsent


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_endpoints_are_parsed_and_bad_ones_named() -> None:
    assert Members(" a:1, b:2 ,", call_timeout=1, connect_timeout=1).endpoints == ["a:1", "b:2"]
    assert Members(["a:1"], call_timeout=1, connect_timeout=1).endpoints == ["a:1"]
    with pytest.raises(ValueError, match="'b:x'"):
        Members("a:1,b:x", call_timeout=1, connect_timeout=1)
    with pytest.raises(ValueError, match="no etcd endpoint"):
        Members(" , ", call_timeout=1, connect_timeout=1)


def test_a_call_that_never_left_is_told_from_one_that_may_have_been_applied() -> None:
    refused = rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; "
                        "last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused")
    assert unsent(refused)
    wrapped = aetcd.ConnectionFailedError("x")
    wrapped.__cause__ = refused  # as aetcd raises it
    assert unsent(wrapped)
    assert not unsent(rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert not unsent(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert not unsent(TimeoutError())
    assert describe(refused, 3).startswith("UNAVAILABLE: failed to connect")
    assert describe(TimeoutError(), 3) == "no answer within 3s"


async def test_bounded_returns_the_result_or_gives_up_without_waiting() -> None:
    assert await bounded(asyncio.sleep(0, "x"), 1) == "x"
    finished = asyncio.Event()

    async def slow_to_cancel() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # a cancellation that takes its time
            finished.set()
            raise

    with pytest.raises(TimeoutError):
        await bounded(slow_to_cancel(), 0.05)
    assert not finished.is_set()  # bounded returned before the abandoned call finished
    await asyncio.wait_for(finished.wait(), 5)  # and that call still ends by itself

    with pytest.raises(KeyError):
        await bounded(_raises(KeyError("k")), 1)


async def _raises(exc: Exception) -> None:
    raise exc
