"""Call control's own configuration, built by the node from its settings.

The fields carry the names of the node's settings they come from, so the node fills them
one for one (``huddle.compose.calls_config``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class CallsConfig:
    node_id: str
    # SFU: where rooms run and what their media may use.
    sfu_workers: int
    # The program each SFU worker process runs (``python -m MODULE``): the node's own, so
    # that workers are set up as the node is (its logs, its collector settings).
    sfu_worker_module: str
    ice_addresses: list[str]
    ice_announced: dict[str, str]
    ice_port_min: int
    ice_port_max: int
    log_level: str
    # What clients get to reach the SFU.
    stun_urls: list[str]
    turn_urls: list[str]
    turn_secret: str | None
    turn_ttl_s: int
    # Rooms.
    room_capacity: int
    selective_forwarding_above: int
    audio_streams_max: int
    video_last_n: int
    sfu_transport_cc: bool
    room_empty_grace_s: float
    call_resume_s: float
    # Ringing.
    ring_timeout_s: float
    presence_refresh_s: float
    # A node that has not refreshed its claims (and its devices' presence) for this long is
    # gone: its rooms open anew elsewhere, its devices leave the rooms of other nodes.
    presence_ttl_s: float
