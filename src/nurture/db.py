"""Engine and transactions.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Writes go through
``transaction()``, which on SQLite starts with ``BEGIN IMMEDIATE``: it takes the write lock up
front, so two processes never deadlock upgrading a read to a write (a deferred transaction would
fail at once with "database is locked" instead of waiting out the busy timeout). Within one
process, writers also queue on a Python lock first: SQLite's own busy handler sleeps in growing
steps of up to 100 ms, which under load (the web endpoint and its mail thread) turns into long
stalls, while a Python lock hands over at once. Plain reads use a deferred BEGIN and, in WAL
mode, never wait for a writer. Transactions stay short.

The write discipline is a :class:`Database`: the sessionmaker for one engine, which owns the
in-process write lock and knows whether this thread is inside one of its write transactions (a
session opened then begins with ``BEGIN IMMEDIATE``: the engine's ``begin`` hook reads that from
the connection's execution options, so no state is kept on the engine or in the module).

Many small writes from concurrent requests (signups) go through a ``GroupCommit``
(:mod:`nurture.group_commit`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 10_000
# Execution option naming the statement that begins a transaction on SQLite.
_BEGIN = "nurture_sqlite_begin"


def make_engine(url: str, **kwargs) -> Engine:
    """Create the engine for ``url``; on SQLite install the pragmas and the write discipline."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN, "BEGIN"))


def insert_or_not(session: Session, model):
    """An INSERT that knows ``ON CONFLICT`` on either database (both dialects spell it alike)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)


class Database(sessionmaker[Session]):
    """The sessions of one engine, and its write discipline: ``transaction()`` for writes.

    On SQLite, writers in this process queue on :attr:`write_lock` and every session opened while
    this thread is inside a write transaction begins with ``BEGIN IMMEDIATE``; other sessions begin
    with a deferred ``BEGIN``. On PostgreSQL a write transaction is an ordinary one.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self.engine = engine
        sqlite_engine = engine.dialect.name == "sqlite"
        self.write_lock: threading.RLock | None = threading.RLock() if sqlite_engine else None
        # The same engine (pool, events) with the begin statement of a write transaction.
        self._write_bind = engine.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"}) if sqlite_engine else engine
        self._writing = threading.local()  # .depth: write transactions this thread is inside

    @property
    def writing(self) -> bool:
        """Whether this thread is inside one of this database's write transactions."""
        return getattr(self._writing, "depth", 0) > 0

    def __call__(self, **local_kw) -> Session:
        if self.writing and "bind" not in local_kw:
            local_kw["bind"] = self._write_bind
        return super().__call__(**local_kw)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short write transaction: commit on success, roll back on any error."""
        self._writing.depth = getattr(self._writing, "depth", 0) + 1
        try:
            if self.write_lock is None:
                with self() as session, session.begin():
                    yield session
            else:
                with self.write_lock, self() as session, session.begin():
                    yield session
        finally:
            self._writing.depth -= 1


def session_factory(engine: Engine) -> Database:
    """The :class:`Database` for ``engine``: the one sessionmaker the entry points and tests build."""
    return Database(engine)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One short write transaction: commit on success, roll back on any error.

    ``sessions`` is a :class:`Database` (from :func:`session_factory`), which brings the SQLite
    write discipline; a plain sessionmaker gets an ordinary transaction."""
    if isinstance(sessions, Database):
        with sessions.transaction() as session:
            yield session
    else:
        with sessions() as session, session.begin():
            yield session


T = TypeVar("T")
log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than the caller could wait."""


def is_transient(exc: BaseException) -> bool:
    """A dropped or refused connection, a restart, a lock timeout: worth trying again on a fresh
    connection. A constraint or data error is not: trying again would fail the same way."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))


def retrying(work: Callable[[], T], *, what: str, patience: float,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``work`` (which opens its own session, so each try gets a fresh connection), again
    with growing pauses while the database is unreachable, for up to ``patience`` seconds."""
    deadline = time.monotonic() + patience
    pause = 0.05
    while True:
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - sorted by is_transient below
            if not is_transient(exc):
                raise
            left = deadline - time.monotonic()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
            if left <= 0:
                raise DatabaseUnavailable(f"{what}: {reason}") from None
            log.warning("database error while %s, trying again: %s", what, reason)
            sleep(min(pause, left))
            pause = min(pause * 2, 2.0)
