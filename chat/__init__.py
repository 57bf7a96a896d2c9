"""Conversations and history (see issue 4)."""
