"""Calls: 1:1 ringing and group rooms on the SFU, across the nodes of one Redis.

Modules, by concept: ``manager`` (sessions joined to SFU rooms, the rooms' events to them),
``ownership`` (which node and worker holds a room, in Redis), ``relay`` (call requests of a
device on one node for a room on another), ``ringing`` (invite, accept, hang up across
nodes, one Lua script per change), ``state`` (ringing as a pure state machine) and
``record`` (what chat is told of a one-to-one call; imports nothing of the rest).

Nothing is imported here, so that ``calls.record`` stays a leaf for chat.
"""
