"""Backup and restore of the embedded store (``huddle history backup PATH`` / ``restore
PATH``), with SQLite's online backup: a backup taken while the node writes is one
consistent state of the store, and a restore replaces the store's contents in one step.

After a restore the store is back at the time of the backup: run it with the node stopped.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from chat.history.sqlite import SQLiteHistory
from chat.history.store import HistoryError

BUSY_TIMEOUT_S: Final = 10.0


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool) -> Iterator[sqlite3.Connection]:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise HistoryError(f"cannot open {path}: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


def _check(conn: sqlite3.Connection, path: Path) -> int:
    """That ``conn`` holds a sound history store; replies its schema version."""
    try:
        [(verdict,)] = conn.execute("PRAGMA integrity_check").fetchall()
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
    except sqlite3.Error as exc:
        raise HistoryError(f"{path} is not a chat history store: {exc}") from None
    if verdict != "ok" or len(rows) != 1:
        raise HistoryError(f"{path} is not a sound chat history store ({verdict})")
    version = int(rows[0][0])
    newest = len(SQLiteHistory.migrations)
    if version > newest:
        raise HistoryError(
            f"{path} has schema version {version}; this version of Huddle knows up to {newest}"
        )
    return version


def backup(store: Path, target: Path) -> None:
    """Copy the store at ``store`` into the new file ``target``."""
    if not store.is_file():
        raise HistoryError(f"no chat history store at {store}")
    if target.exists():
        raise HistoryError(f"{target} exists already: give a new file")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _connect(store, read_only=True) as source, _connect(target, read_only=False) as copy:
            source.backup(copy)
            # A file that stands alone: no write-ahead log beside it.
            copy.execute("PRAGMA journal_mode=DELETE")
            _check(copy, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def restore(source: Path, store: Path) -> None:
    """Replace the contents of the store at ``store`` by the backup ``source`` (checked
    first: a file that is not a sound store changes nothing)."""
    if not source.is_file():
        raise HistoryError(f"no backup at {source}")
    with _connect(source, read_only=True) as backup_conn:
        _check(backup_conn, source)
        store.parent.mkdir(parents=True, exist_ok=True)
        with _connect(store, read_only=False) as target:
            target.execute("PRAGMA journal_mode=WAL")
            backup_conn.backup(target)
