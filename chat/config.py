"""Chat's own configuration, built by the node from its settings.

The fields carry the names of the node's settings they come from, so the node fills them
one for one (``huddle.compose.chat_config``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ChatConfig:
    chat_max_text_chars: int
    chat_max_members: int
    chat_recall_window_s: float
    chat_send_per_s: int
    chat_word_filter: list[str]
    chat_replay_events: int
    chat_feed_events: int
    chat_sync_max_events: int
    chat_max_reaction_kinds: int
    chat_replica_ack_ms: int = 0
    chat_window_events: int = 2000
    chat_window_days: float = 30
