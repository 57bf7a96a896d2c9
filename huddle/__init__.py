"""Huddle: real-time media and signaling server."""

__version__ = "0.1.0"
