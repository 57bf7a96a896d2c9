"""The history store's own configuration, built by the node from its settings
(``huddle.compose.history_config``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

# The embedded store's file in the node's data folder.
SQLITE_NAME: Final = "history.db"


@dataclass(frozen=True, kw_only=True)
class HistoryConfig:
    store: Literal["sqlite", "postgres"]
    path: Path  # the SQLite file
    database_url: str | None  # PostgreSQL
    history_retention_days: float = 0

    def __repr__(self) -> str:
        # The URL may carry a password: never in a log line or a traceback.
        url = "set" if self.database_url else None
        return f"HistoryConfig(store={self.store!r}, path={self.path!r}, database_url={url})"
