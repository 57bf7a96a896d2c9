"""sfu.aiortc_glue: every private name of aiortc, aioice and pylibsrtp it relies on exists in
the installed packages, as what the glue takes it for (so that a version bump fails here,
in one place); and ``install()`` twice is the same as once."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioice.ice
import aiortc.clock
import aiortc.rtcrtpreceiver
import pylibsrtp
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtp import HeaderExtensionsMap

from sfu import aiortc_glue as glue


def _resolve(dotted: str) -> Any:
    """A module, or an attribute of one (``package.module.Class``)."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        module, _, name = dotted.rpartition(".")
        return getattr(_resolve(module), name)


@pytest.fixture
async def instances() -> AsyncIterator[dict[str, Any]]:
    """One live object of every class whose instance attributes the glue reads."""
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video")
    dtls = transceiver.sender.transport
    ice = dtls.transport
    policy = pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    found = {
        "aiortc.rtcrtptransceiver.RTCRtpTransceiver": transceiver,
        "aiortc.rtcrtpsender.RTCRtpSender": transceiver.sender,
        "aiortc.rtcrtpreceiver.RTCRtpReceiver": transceiver.receiver,
        "aiortc.rtcdtlstransport.RTCDtlsTransport": dtls,
        "aiortc.rtcdtlstransport.RtpRouter": dtls._rtp_router,
        "aiortc.rtcicetransport.RTCIceTransport": ice,
        "aioice.ice.Connection": ice._connection,
        "aioice.ice.StunProtocol": aioice.ice.StunProtocol(ice._connection),
        "aiortc.rtp.HeaderExtensionsMap": HeaderExtensionsMap(),
        "pylibsrtp.Session": pylibsrtp.Session(policy),
    }
    yield found
    await pc.close()


def test_every_replaced_name_is_listed() -> None:
    listed = {f"{owner}.{name}" for owner, name, _ in glue.AIORTC_PRIVATE}
    assert set(glue.REPLACED) <= listed


def test_the_list_covers_every_owner_class_with_a_live_instance() -> None:
    owners = {owner for owner, _, kind in glue.AIORTC_PRIVATE if kind == "instance"}
    assert owners <= {
        "aiortc.rtcrtptransceiver.RTCRtpTransceiver",
        "aiortc.rtcrtpsender.RTCRtpSender",
        "aiortc.rtcrtpreceiver.RTCRtpReceiver",
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "aiortc.rtcdtlstransport.RtpRouter",
        "aiortc.rtcicetransport.RTCIceTransport",
        "aioice.ice.Connection",
        "aioice.ice.StunProtocol",
        "aiortc.rtp.HeaderExtensionsMap",
        "pylibsrtp.Session",
    }


@pytest.mark.parametrize(
    ("owner", "name", "kind"),
    glue.AIORTC_PRIVATE,
    ids=[f"{o}.{n}" for o, n, _ in glue.AIORTC_PRIVATE],
)
async def test_each_private_name_exists_as_the_glue_expects(
    owner: str, name: str, kind: str, instances: dict[str, Any]
) -> None:
    if kind == "instance":
        assert owner in instances, f"no live {owner} to look at"
        assert hasattr(instances[owner], name), f"{owner} instances have no {name}"
        return
    # A name install() replaces is checked as the package held it, not as patched.
    target = _resolve(owner)
    value = glue.REPLACED.get(f"{owner}.{name}")
    if value is None:
        assert hasattr(target, name), f"{owner} has no {name}"
        value = getattr(target, name)
    if kind == "function":
        assert callable(value) and not inspect.isclass(value)
    elif kind == "method":
        assert inspect.isfunction(value) and not inspect.iscoroutinefunction(value)
    elif kind == "coroutine":
        assert inspect.iscoroutinefunction(value)
    else:
        assert kind == "attribute", f"unknown kind {kind!r}"


def _patched() -> dict[str, Any]:
    return {
        "current_ms": aiortc.clock.current_ms,
        "datagram_received": aioice.ice.StunProtocol.datagram_received,
        "run_rtcp": RTCRtpSender._run_rtcp,
        "get_decoder": aiortc.rtcrtpreceiver.get_decoder,  # type: ignore[attr-defined]
        "huddle_dtls": aioice.ice.Connection._huddle_dtls,  # type: ignore[attr-defined]
    }


@pytest.fixture
def restore_ice_and_decoders() -> Iterator[None]:
    """install() is process-wide: the addresses and decoder counting go back as they were."""
    addresses = aioice.ice.get_host_addresses
    get_decoder = aiortc.rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]
    listeners = list(glue._decoder_listeners)
    yield
    aioice.ice.get_host_addresses = addresses
    aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[attr-defined]
    glue._decoder_listeners[:] = listeners


@pytest.mark.usefixtures("restore_ice_and_decoders")
def test_install_twice_is_the_same_as_once() -> None:
    created: list[int] = []

    def count() -> None:
        created.append(1)

    glue.install(host_addresses=["127.0.0.1"], on_decoder=count)
    once = _patched()
    addresses_once = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    glue.install(host_addresses=["127.0.0.1"], on_decoder=count)
    assert _patched() == once
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == addresses_once
    assert addresses_once == ["127.0.0.1"]
    opus = aiortc.RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    aiortc.rtcrtpreceiver.get_decoder(opus)  # type: ignore[attr-defined]
    assert created == [1]  # one decoder, counted once: the counter is not stacked
