"""The services' optional dead-letter databases: checking their URLs, preparing SQLite files.

recurring-task-service and notification-service both read `DLQ_DATABASE_URL`, an SQLAlchemy
async URL, and park dead letters there instead of in memory. The checks here run when their
settings are built, so a bad URL stops the process at start-up with a message naming the
variable, never with the URL's password in it.
"""

from __future__ import annotations

from pathlib import Path

from todo_observability import ConfigurationError, get_logger

__all__ = ["check_async_database_url", "prepare_sqlite_file", "without_password"]

_log = get_logger(__name__)


def check_async_database_url(
    url: str, *, env_var: str, example: str, unset: str = "to keep dead letters in memory"
) -> None:
    """Refuse a URL that SQLAlchemy's asyncio engine cannot use.

    The URL is parsed and an engine is built from it (which loads the dialect and its driver
    but opens no connection), so a sync driver (`sqlite://`), a misspelt dialect or a driver
    that is not installed is refused at start-up rather than at the first dead letter.

    Args:
        url: The URL, as given.
        env_var: The variable it came from; the error names it, and its lower-case form is the
            error's `field` (the settings attribute).
        example: The URLs to suggest, such as `sqlite+aiosqlite:///./data/recurring.db`.
        unset: What unsetting the variable does, completing "or unset it ..." (by default
            "to keep dead letters in memory").

    Raises:
        ConfigurationError: the URL does not parse or names no usable async driver; the
            message shows it with its password masked.
    """
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigurationError(
            f"{env_var} is not an SQLAlchemy URL: {without_password(url)!r}; "
            f"set it like {example}, or unset it {unset}.",
            field=env_var.lower(),
            env_var=env_var,
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = create_async_engine(parsed)
    except (sa_exc.SQLAlchemyError, ImportError) as exc:
        raise ConfigurationError(
            f"{env_var} {shown!r} cannot be used with SQLAlchemy's asyncio engine "
            f"({type(exc).__name__}: {exc}); name an async driver installed here, like "
            f"{example}, or unset it {unset}.",
            field=env_var.lower(),
            env_var=env_var,
        ) from None
    engine.sync_engine.dispose()


def without_password(url: str) -> str:
    """`url` with everything between its user name and its last `@` masked.

    For URLs SQLAlchemy cannot parse, so cannot mask itself: the error still must not show a
    password, even when the mistake is in the scheme (`postgresql+psycopg:/user:pw@host/db`).

    Args:
        url: A URL, well-formed or not.

    Returns:
        `url` with its credentials as `user:***` when it has an `@` (with no `://`, all of
        them after the first `:`), else `url` unchanged.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    if "@" not in rest:
        return url
    # The last `@`: a password may contain `@` (unescaped), a host never does. Whatever
    # follows the first `:` before it is masked, be it the password or a mangled scheme's rest.
    credentials, _, host = rest.rpartition("@")
    kept = credentials.split(":", 1)[0]
    return f"{head}{sep}{kept}:***@{host}"


def prepare_sqlite_file(url: str) -> Path | None:
    """Create the directory of the SQLite database file `url` names, if it is missing.

    SQLite creates a missing database file, but not its directory; a relative path such as
    `./data/recurring.db` would otherwise fail on a fresh checkout. Other databases, in-memory
    SQLite and `file:` URIs are left alone.

    Args:
        url: An SQLAlchemy URL (already checked with `check_async_database_url`).

    Returns:
        The directory created, or None when nothing had to be.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    directory = Path(database).parent
    if directory.exists():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    _log.info("created the directory of the dead-letter database", extra={"path": str(directory)})
    return directory
