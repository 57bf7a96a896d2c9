"""The node and its history store: which store it opens, retention, and the embedded store's
backup and restore commands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chat import wire as w
from chat.history import retention
from chat.history.config import SQLITE_NAME
from chat.history.postgres import PostgresHistory
from chat.history.sqlite import SQLiteHistory
from chat.history.store import Head
from huddle.app import HISTORY
from huddle.cli import main
from huddle.config import Settings
from tests.conftest import StartNode
from tests.functional.test_history_store import CONV, Log
from tests.postgres import Postgres, postgres

__all__ = ["postgres"]
DAY_MS = 86_400_000


async def test_a_node_opens_the_embedded_store_in_its_data_folder(start_node: StartNode) -> None:
    node = await start_node()
    store = node.app[HISTORY]
    assert isinstance(store, SQLiteHistory)
    assert store.path == node.settings.data_dir / SQLITE_NAME
    assert store.path.is_file()
    assert await store.schema_version() == len(SQLiteHistory.migrations)


async def test_a_node_opens_postgres_given_a_database_url(
    start_node: StartNode, postgres: Postgres
) -> None:
    url = postgres.create_database()
    node = await start_node(database_url=url)
    store = node.app[HISTORY]
    assert isinstance(store, PostgresHistory)
    assert await store.schema_version() == len(PostgresHistory.migrations)
    assert not (node.settings.data_dir / SQLITE_NAME).exists()


async def test_a_node_does_not_start_on_an_unreachable_database(
    start_node: StartNode, postgres: Postgres
) -> None:
    # The server's own words, not only the pool's timeout.
    with pytest.raises(Exception, match=r'history database.*"no_such_database" does not exist'):
        await start_node(database_url=postgres.url("no_such_database"))


async def test_the_postgres_store_goes_on_after_its_server_restarts(postgres: Postgres) -> None:
    """The connections the pool held when the server went away are never lent out again:
    the first reads and write once it is back succeed (before, each stale connection failed
    one request: "terminating connection due to administrator command")."""
    log = Log()
    store = await PostgresHistory.open(postgres.create_database(), max_size=3)
    try:
        await store.append(CONV, [log.message("before")])
        # Every connection of the pool in use once, so each is held, idle, by the pool.
        await asyncio.gather(*(store.head(CONV) for _ in range(3)))
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(postgres.start)
        heads = await asyncio.gather(*(store.head(CONV) for _ in range(3)))
        assert heads == [Head(1, "e1", 1)] * 3
        assert await store.append(CONV, [log.message("after")]) == Head(2, "e1", 2)
        assert [m.text for m in await store.page(CONV)] == ["before", "after"]
    finally:
        await store.close()


def test_history_settings() -> None:
    base: dict[str, Any] = {"data_dir": Path("d")}
    assert Settings(**base).history_store == "sqlite"
    url = "postgresql://u:p@db/h"
    assert Settings(**base, database_url=url).history_store == "postgres"
    with pytest.raises(ValidationError, match="database_url"):
        Settings(**base, history="postgres")
    with pytest.raises(ValidationError, match="history=sqlite"):
        Settings(**base, history="sqlite", database_url=url)
    with pytest.raises(ValidationError):
        Settings(**base, history="mysql")
    with pytest.raises(ValidationError):
        Settings(**base, history_retention_days=-1)


async def test_retention_deletes_old_history(
    start_node: StartNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time() * 1000)
    log, other = Log(), Log("g-other")
    seeded = await SQLiteHistory.open(tmp_path / "node0" / SQLITE_NAME)
    try:
        await seeded.append(
            CONV,
            [
                log.message("a month ago", ts=now - 30 * DAY_MS),
                log.message("last week", ts=now - 7 * DAY_MS),
                log.message("yesterday", ts=now - DAY_MS),
            ],
        )
        await seeded.append("g-other", [other.message("long ago", ts=now - 365 * DAY_MS)])
    finally:
        await seeded.close()
    monkeypatch.setattr(retention, "RETENTION_INTERVAL_S", 0.2)
    node = await start_node(history_retention_days=3)
    store = node.app[HISTORY]
    async with asyncio.timeout(10):
        while await store.messages(CONV, [1, 2]) or await store.messages("g-other", [1]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert [m.text for m in await store.page(CONV)] == ["yesterday"]
    assert await store.head(CONV) == Head(3, "e1", 3)


async def test_retention_is_off_by_default(start_node: StartNode, tmp_path: Path) -> None:
    seeded = await SQLiteHistory.open(tmp_path / "node0" / SQLITE_NAME)
    try:
        await seeded.append(CONV, [Log().message("ancient", ts=1)])
    finally:
        await seeded.close()
    node = await start_node()
    assert node.settings.history_retention_days == 0
    await asyncio.sleep(0.3)
    assert len(await node.app[HISTORY].messages(CONV, [1])) == 1
    assert await retention.expire_old(node.app[HISTORY], 1) == 1


async def test_backup_while_in_use_and_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    store = await SQLiteHistory.open(data / SQLITE_NAME)
    log = Log()
    target = tmp_path / "backups" / "history-1.db"
    try:
        await store.append(CONV, [log.message(f"before {i}") for i in range(50)])
        # Taken while the store is open and written: one consistent state.
        writes = asyncio.create_task(store.append(CONV, [log.message("during")]))
        code = await asyncio.to_thread(
            main, ["history", "backup", str(target), "--data-dir", str(data)]
        )
        await writes
        assert code == 0, capsys.readouterr().err
        await store.append(CONV, [log.message("after")])
        assert (await store.head(CONV) or Head(0, "", 0)).last_seq == 52
    finally:
        await store.close()

    code = await asyncio.to_thread(
        main, ["history", "restore", str(target), "--data-dir", str(data)]
    )
    assert code == 0, capsys.readouterr().err
    restored = await SQLiteHistory.open(data / SQLITE_NAME)
    try:
        head = await restored.head(CONV)
        assert head is not None and head.last_seq in (50, 51)
        texts = [m.text for m in await restored.page(CONV, limit=100)]
        assert texts[:50] == [f"before {i}" for i in range(50)]
        assert "after" not in texts
        assert len(texts) == head.last_seq
        hits = await restored.search([CONV], w.ChatSearch(id="q", query="before"))
        assert hits[0].message.seq == 50
    finally:
        await restored.close()


async def test_backup_and_restore_refuse_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    assert main(["history", "backup", str(tmp_path / "b.db"), *args]) == 2
    assert "no chat history store" in capsys.readouterr().err

    store = await SQLiteHistory.open(data / SQLITE_NAME)
    try:
        await store.append(CONV, [Log().message("keep me")])
    finally:
        await store.close()
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"something else")
    assert main(["history", "backup", str(existing), *args]) == 2
    assert "exists already" in capsys.readouterr().err
    assert existing.read_bytes() == b"something else"

    assert main(["history", "restore", str(existing), *args]) == 2
    assert "not a chat history store" in capsys.readouterr().err
    assert main(["history", "restore", str(tmp_path / "missing.db"), *args]) == 2
    assert "no backup" in capsys.readouterr().err
    reopened = await SQLiteHistory.open(data / SQLITE_NAME)
    try:
        assert [m.text for m in await reopened.page(CONV)] == ["keep me"]
    finally:
        await reopened.close()

    url = ["--data-dir", str(data)]
    code = await asyncio.to_thread(_main_with_env, ["history", "backup", "x.db", *url])
    assert code == 2
    assert "pg_dump" in capsys.readouterr().err


def _main_with_env(argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", "postgresql://u@h/db")
        return main(argv)
