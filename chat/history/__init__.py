"""Chat history on disk: every conversation's log, copied in order into a database.

Redis keeps what is hot (see chat.store); the history store keeps everything, behind one
interface (:class:`chat.history.store.HistoryStore`) with two implementations: SQLite, the
embedded default of one node (a file in the data folder), and PostgreSQL, shared by several
nodes. Both pass the same contract tests (tests/functional/test_history_store.py).
"""
