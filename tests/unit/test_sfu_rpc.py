"""The worker RPC table (sfu.ipc.RPCS) and the room hosts agree: every call a node makes on
a room's host is one request whose fields are the call's parameters, in order, and both
hosts (in this process and over IPC) offer it."""

from __future__ import annotations

import inspect

import msgspec
import pytest

from sfu import ipc
from sfu.host import LocalHost, RoomHost
from sfu.pool import WorkerHost


def _params(function: object) -> tuple[str, ...]:
    assert callable(function)
    return tuple(name for name in inspect.signature(function).parameters if name != "self")


def _protocol_methods() -> set[str]:
    return {
        name
        for name, value in vars(RoomHost).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }


def test_every_room_host_call_is_an_rpc_and_every_rpc_a_room_host_call() -> None:
    assert set(ipc.RPCS) == _protocol_methods()


@pytest.mark.parametrize("method", sorted(ipc.RPCS))
def test_the_request_fields_are_the_method_parameters_in_order(method: str) -> None:
    request = ipc.RPCS[method]
    assert request.__struct_fields__[0] == "id"
    fields = ipc.rpc_params(request)
    assert _params(getattr(RoomHost, method)) == fields
    assert _params(getattr(LocalHost, method)) == fields
    assert inspect.iscoroutinefunction(getattr(LocalHost, method))


@pytest.mark.parametrize("method", sorted(ipc.RPCS))
def test_the_worker_host_offers_every_rpc(method: str) -> None:
    assert inspect.iscoroutinefunction(getattr(WorkerHost, method))


def test_a_request_is_built_from_positional_and_named_arguments() -> None:
    request = ipc.make_request(
        "join", 7, ("room", "ada", "Ada"), {"can_publish": True, "can_subscribe": False}
    )
    assert request == ipc.Join(
        id=7, room="room", identity="ada", name="Ada", can_publish=True, can_subscribe=False
    )
    assert ipc.rpc_method(request) == "join"
    assert ipc.request_args(request) == {
        "room": "room",
        "identity": "ada",
        "name": "Ada",
        "can_publish": True,
        "can_subscribe": False,
    }


def test_a_request_survives_the_wire() -> None:
    request = ipc.make_request("set_paused", 3, ("p1",), {"kind": "video", "paused": True})
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(request), type=ipc.Request)
    assert decoded == request
    assert ipc.request_args(decoded) == {"participant": "p1", "kind": "video", "paused": True}


def test_wrong_arguments_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError):
        ipc.make_request("leave", 1, ("p1", "extra"), {})
    with pytest.raises(TypeError):
        ipc.make_request("leave", 1, (), {"who": "p1"})
    with pytest.raises(KeyError):
        ipc.make_request("no_such_call", 1, (), {})
