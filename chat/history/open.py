"""Open the store the configuration names."""

from __future__ import annotations

from chat.history.config import HistoryConfig
from chat.history.postgres import PostgresHistory
from chat.history.sql import SqlHistory
from chat.history.sqlite import SQLiteHistory
from chat.history.store import HistoryError


async def open_history(config: HistoryConfig) -> SqlHistory:
    if config.store == "postgres":
        if not config.database_url:
            raise HistoryError("the PostgreSQL history store needs a database URL")
        return await PostgresHistory.open(config.database_url)
    return await SQLiteHistory.open(config.path)
