"""Signaling: the WebSocket protocol, auth, presence and the HTTP API."""
