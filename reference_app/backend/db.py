"""The database: an async SQLAlchemy engine, sessions, the schema, and what "unavailable" means."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from reference_app.backend.models import Base
from todo_observability import instrument_sqlalchemy

UNAVAILABLE_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)
"""Errors that say the database cannot be reached or used now (not that a query is wrong)."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is down, unreachable or busy, rather than a bug."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class Database:
    """The backend's database: engine, session factory and schema creation.

    Args:
        url: SQLAlchemy async URL (`sqlite+aiosqlite:///...`, `postgresql+psycopg://...`).
        connect_timeout: Seconds to wait for a connection (SQLite: for the write lock).
    """

    def __init__(self, url: str, *, connect_timeout: float = 3.0):
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            connect_args["timeout"] = connect_timeout
        elif parsed.get_driver_name() == "psycopg":
            # libpq takes whole seconds (and treats 1 as 2).
            connect_args["connect_timeout"] = max(2, math.ceil(connect_timeout))
        elif parsed.get_driver_name() == "asyncpg":
            connect_args["timeout"] = connect_timeout
        self._sqlite_path = parsed.database if self.is_sqlite else None
        # pre-ping: after a database restart, a pooled connection is replaced instead of
        # failing one request.
        self.engine: AsyncEngine = create_async_engine(
            url, connect_args=connect_args, pool_pre_ping=True
        )
        instrument_sqlalchemy(self.engine)  # a span per statement, in the request's trace
        if self.is_sqlite:
            _serialise_sqlite_writers(self.engine)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    async def ensure_schema(self) -> None:
        """Create the tables (and the SQLite file's folder) once; a no-op afterwards.

        Raises:
            sqlalchemy.exc.OperationalError: the database cannot be reached; the next call
                tries again.
        """
        async with self._schema_lock:  # once ready, a free lock and one check
            if self._schema_ready:
                return
            if self._sqlite_path and self._sqlite_path != ":memory:":
                Path(self._sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            async with self.engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            self._schema_ready = True

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _serialise_sqlite_writers(engine: AsyncEngine) -> None:
    """Make every SQLite transaction `BEGIN IMMEDIATE`.

    A deferred transaction that reads and then writes cannot upgrade its lock while another
    one writes: SQLite answers "database is locked" at once instead of waiting. Taking the
    write lock up front makes concurrent requests queue on the busy timeout instead.
    (SQLAlchemy's documented recipe for the pysqlite/aiosqlite drivers.)
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _no_driver_begin(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
