"""Built-in health checks: SQL database, HTTP dependency, Dapr sidecar, pub/sub, Jobs API, SMTP, event-loop lag.

Each factory returns a `Check` whose function is a coroutine returning a `CheckResult`. The engine
applies the timeout and turns exceptions into DOWN; the checks still give every library they call a
timeout no longer than the check's own, so nothing (a socket, a half-open SMTP session) outlives a
run the engine has given up on. Errors and details never carry a secret: passwords and tokens are
only ever sent, never reported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import ssl
import sys
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, cast

import httpx

from todo_observability.exceptions import ConfigurationError, MissingExtraError
from todo_observability.health._thread import SingleThread, StillRunning
from todo_observability.health.model import Check, CheckResult
from todo_observability.redaction import REDACTED, Redactor

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "dapr_jobs",
    "dapr_pubsub",
    "dapr_sidecar",
    "database",
    "event_loop_lag",
    "http",
    "smtp",
]

_READY = ("ready",)
_READY_AND_STARTUP = ("ready", "startup")
_DEFAULT_TIMEOUT = 2.0
_DEFAULT_TTL = 5.0
_MAX_ERROR_CHARS = 500
_DAPR_TOKEN_HEADER = "dapr-api-token"  # noqa: S105 - a header name, not a secret
_JOBS_PROBE_NAME = "todo-observability-health-probe"

AsyncCheck = Callable[[], Awaitable[CheckResult]]


# --- shared helpers ----------------------------------------------------------------------------


def _make_check(
    name: str,
    function: AsyncCheck,
    *,
    groups: Sequence[str],
    critical: bool,
    timeout: float,
    ttl: float,
    dependency: bool = True,
) -> Check:
    return Check(
        name=name,
        function=function,
        groups=tuple(groups),
        critical=critical,
        timeout=timeout,
        ttl=ttl,
        dependency=dependency,
    )


def _scrub(text: str, secrets: Sequence[str | None]) -> str:
    """`text` on one line, shortened, with every secret replaced by `[REDACTED]`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = " ".join(text.split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text


def _describe(
    exc: BaseException, secrets: Sequence[str | None] = (), *, url: tuple[str, str] | None = None
) -> str:
    """`ExceptionType: message`, scrubbed; the type alone when the message is empty.

    `url` is (the URL as given, the URL safe to show): the first is replaced by the second
    before scrubbing, so a message quoting the URL shows it without its credentials.
    """
    message = str(exc)
    if url is not None:
        message = message.replace(*url)
    return _scrub(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, secrets)


class _HttpClients:
    """Hands out an `httpx.AsyncClient`: the caller's, or a short-lived one per run.

    A fresh client per run needs no shutdown hook and keeps no connection open between probes.
    Building one costs about 25 ms, nearly all of it loading the CA bundle into a new SSL
    context, so the context is built once (on first use) and shared by every client.
    """

    __slots__ = ("_client", "_ssl_context", "_timeout")

    def __init__(self, client: httpx.AsyncClient | None, timeout: float):
        self._client = client
        self._timeout = timeout
        self._ssl_context: ssl.SSLContext | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        if self._ssl_context is None:
            import certifi  # httpx's own CA bundle (certifi is an httpx dependency)

            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        async with httpx.AsyncClient(timeout=self._timeout, verify=self._ssl_context) as client:
            yield client


def _status_text(expect_status: Container[int]) -> str:
    """How the expected statuses read in an error: `200-399`, `200, 204`."""
    if isinstance(expect_status, range) and expect_status.step == 1 and len(expect_status):
        return f"{expect_status.start}-{expect_status[-1]}"
    if isinstance(expect_status, Iterable):
        return ", ".join(str(code) for code in sorted(expect_status))
    return repr(expect_status)


def _safe_url(url: httpx.URL) -> str:
    """The URL without user info, query or fragment: what may appear in details."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


# --- SQL database ------------------------------------------------------------------------------


def database(
    engine: Engine | AsyncEngine,
    *,
    name: str = "database",
    groups: Sequence[str] = _READY_AND_STARTUP,
    critical: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A check that runs `SELECT 1` through a SQLAlchemy engine.

    An `AsyncEngine` runs on the event loop; a sync `Engine` runs in a thread of the check's
    own (never the event loop's default executor). A thread cannot be cancelled: when the
    engine's timeout fires, the thread goes on until the driver returns, and until then the
    check is DOWN ("still running since 12.0 s") without starting another. Give the engine a
    connect timeout of its own no longer than this check's (for example
    `connect_args={"connect_timeout": 2}` with psycopg).

    A pooled connection that the server dropped (PostgreSQL restarted, a failover) fails once
    and is invalidated by SQLAlchemy; the check then retries once on a fresh connection, so it
    reports the database as it is now, not the state of a stale pool.

    Args:
        engine: A SQLAlchemy 2.x `Engine` or `AsyncEngine`.
        name: The check's name.
        groups: The probes it counts for.
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds before the engine counts a run as DOWN.
        ttl: Seconds a result is reused.

    Returns:
        The check. Details: `dialect`, the SQLAlchemy dialect name (`postgresql`, `sqlite`).

    Raises:
        MissingExtraError: SQLAlchemy is not installed.
    """
    try:
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import literal_column, select
    except ImportError as exc:  # pragma: no cover - an engine cannot exist without SQLAlchemy
        raise MissingExtraError("The database health check", "sql", "sqlalchemy") from exc

    # select(literal_column("1")) is `SELECT 1`, or `SELECT 1 FROM DUAL` where the dialect needs it.
    statement: Select[tuple[int]] = select(literal_column("1"))
    # The URL's password is scrubbed from error text (drivers do not usually echo it; be sure).
    secrets = (engine.url.password,)
    dialect = engine.dialect.name
    # sqlalchemy.ext.asyncio cannot be imported without greenlet; an AsyncEngine cannot exist
    # unless that module was imported, so it is only looked up when already loaded.
    asyncio_module = sys.modules.get("sqlalchemy.ext.asyncio")
    select_one: Callable[[], Awaitable[Any]]
    if asyncio_module is not None and isinstance(engine, asyncio_module.AsyncEngine):
        async_engine = cast("AsyncEngine", engine)

        async def select_one() -> Any:
            async with async_engine.connect() as connection:
                return (await connection.execute(statement)).scalar()

    else:
        sync_engine = cast("Engine", engine)

        def select_one_in_thread() -> Any:
            with sync_engine.connect() as connection:
                return connection.execute(statement).scalar()

        # Its own thread, one at a time, never the loop's default executor: see _thread.py.
        thread = SingleThread(f"health-{name}")

        async def select_one() -> Any:
            return await thread.run(select_one_in_thread)

    async def check_database() -> CheckResult:
        try:
            try:
                value = await select_one()
            except sa_exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                value = await select_one()  # the pooled connection was dead: one fresh try
        except StillRunning as exc:
            return CheckResult.down(str(exc), dialect=dialect)
        except sa_exc.DBAPIError as exc:
            # The driver's own exception reads better than SQLAlchemy's wrapper around it
            # (which adds the statement and a link to its documentation).
            cause = exc.orig if exc.orig is not None else exc
            return CheckResult.down(_describe(cause, secrets), dialect=dialect)
        except Exception as exc:  # noqa: BLE001 - any failure to query is this check's DOWN
            return CheckResult.down(_describe(exc, secrets), dialect=dialect)
        if value != 1:
            return CheckResult.down(f"SELECT 1 returned {value!r}", dialect=dialect)
        return CheckResult.up(dialect=dialect)

    return _make_check(
        name, check_database, groups=groups, critical=critical, timeout=timeout, ttl=ttl
    )


# --- HTTP dependency ---------------------------------------------------------------------------


def http(
    url: str,
    *,
    name: str,
    expect_status: Container[int] = range(200, 400),
    client: httpx.AsyncClient | None = None,
    headers: Mapping[str, str] | None = None,
    groups: Sequence[str] = _READY,
    critical: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A check that GETs `url` and expects a status in `expect_status`.

    Redirects are not followed: a 3xx is the answer (and counts as UP with the default range).

    Args:
        url: What to GET.
        name: The check's name (required: a URL can carry credentials, so it is never the name).
        expect_status: The statuses that mean UP (a `range`, a set, ...).
        client: The client to use; by default a short-lived one per run. Yours stays open.
        headers: Extra request headers (for example an `Authorization`); never reported.
        groups: The probes it counts for.
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds before the engine counts a run as DOWN; also the request's timeout.
        ttl: Seconds a result is reused.

    Returns:
        The check. Details: `url` (without credentials or query) and `status_code`.
    """
    target = httpx.URL(url)
    safe_url = _safe_url(target)
    redactor = Redactor()
    # Header values under sensitive names (Authorization, X-Api-Key, ...) and the URL's password.
    secrets = (
        target.password or None,
        *(value for key, value in (headers or {}).items() if redactor.is_sensitive(key)),
    )
    clients = _HttpClients(client, timeout)
    expected = _status_text(expect_status)
    request_headers = dict(headers or {})

    async def check_http() -> CheckResult:
        try:
            async with clients.session() as session:
                response = await session.get(target, headers=request_headers, timeout=timeout)
        except httpx.HTTPError as exc:
            return CheckResult.down(
                f"transport error: {_describe(exc, secrets, url=(url, safe_url))}", url=safe_url
            )
        if response.status_code not in expect_status:
            return CheckResult.down(
                f"GET answered {response.status_code}, expected {expected}",
                url=safe_url,
                status_code=response.status_code,
            )
        return CheckResult.up(url=safe_url, status_code=response.status_code)

    return _make_check(name, check_http, groups=groups, critical=critical, timeout=timeout, ttl=ttl)


# --- Dapr ----------------------------------------------------------------------------------------


class _Dapr:
    """The sidecar's HTTP API as the Dapr checks use it: base URL, token, a client per run."""

    __slots__ = ("base_url", "clients", "headers", "timeout", "token")

    def __init__(
        self,
        base_url: str | None,
        api_token: str | None,
        client: httpx.AsyncClient | None,
        timeout: float,
    ):
        if base_url is None:
            base_url = os.environ.get("DAPR_HTTP_ENDPOINT") or (
                f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT') or 3500}"
            )
        self.base_url = base_url.rstrip("/")
        self.token = api_token if api_token is not None else os.environ.get("DAPR_API_TOKEN")
        self.headers = {_DAPR_TOKEN_HEADER: self.token} if self.token else {}
        self.timeout = timeout
        self.clients = _HttpClients(client, timeout)

    async def get(self, session: httpx.AsyncClient, path: str) -> httpx.Response:
        return await session.get(self.base_url + path, headers=self.headers, timeout=self.timeout)

    def unreachable(self, exc: httpx.HTTPError) -> CheckResult:
        return CheckResult.down(
            f"Dapr sidecar unreachable at {_safe_url(httpx.URL(self.base_url))}: "
            f"{_describe(exc, (self.token,))}"
        )

    def answer(self, response: httpx.Response) -> str:
        """`500 ERR_HEALTH_NOT_READY: dapr is not ready: [app]`, from Dapr's JSON error body."""
        code, message = _dapr_error(response)
        text = f"{response.status_code}"
        if code:
            text += f" {code}"
        if message:
            text += f": {message}"
        return _scrub(text, (self.token,))


def _dapr_error(response: httpx.Response) -> tuple[str, str]:
    """The `errorCode` and `message` of a Dapr error body (`{"errorCode", "message"}`), or ""."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text.strip()
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("errorCode") or ""), str(body.get("message") or "")


def dapr_sidecar(
    *,
    name: str = "dapr-sidecar",
    base_url: str | None = None,
    api_token: str | None = None,
    client: httpx.AsyncClient | None = None,
    groups: Sequence[str] = _READY_AND_STARTUP,
    critical: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A check of the Dapr sidecar: `GET /v1.0/healthz/outbound` and `GET /v1.0/healthz`.

    Both answer 204 when healthy and 500 (`ERR_HEALTH_NOT_READY`, `ERR_OUTBOUND_HEALTH_NOT_READY`)
    when not. Outbound not ready is DOWN: the app cannot call the sidecar at all (publish, state,
    invocation, jobs), which is exactly what the Dapr SDKs wait on before their first call.
    Outbound ready but `/v1.0/healthz` not ready is DEGRADED, not DOWN: the full health includes
    the app channel, and daprd only marks it ready after it has seen *this app* come up
    (`blockUntilAppIsReady`, after it marks outbound ready). Failing readiness on it would be the
    circular dependency Dapr's documentation warns about ("Do not depend on the /healthz
    endpoint in your application code"): the app waits for the sidecar, which waits for the app.

    Args:
        name: The check's name.
        base_url: The sidecar's HTTP API. Default: `DAPR_HTTP_ENDPOINT`, else
            `http://127.0.0.1:$DAPR_HTTP_PORT` (port 3500 when unset).
        api_token: Sent as `dapr-api-token`. Default: `DAPR_API_TOKEN` (nothing sent when unset).
        client: The client to use; by default a short-lived one per run. Yours stays open.
        groups: The probes it counts for.
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds before the engine counts a run as DOWN; also each request's timeout.
        ttl: Seconds a result is reused.

    Returns:
        The check.
    """
    dapr = _Dapr(base_url, api_token, client, timeout)

    async def check_dapr_sidecar() -> CheckResult:
        try:
            async with dapr.clients.session() as session:
                outbound = await dapr.get(session, "/v1.0/healthz/outbound")
                if not outbound.is_success:
                    return CheckResult.down(
                        "Dapr sidecar cannot serve the app's calls: GET /v1.0/healthz/outbound "
                        f"answered {dapr.answer(outbound)}"
                    )
                full = await dapr.get(session, "/v1.0/healthz")
        except httpx.HTTPError as exc:
            return dapr.unreachable(exc)
        if not full.is_success:
            return CheckResult.degraded(
                f"Dapr sidecar serves the app's calls but is not fully ready: GET /v1.0/healthz "
                f"answered {dapr.answer(full)}"
            )
        return CheckResult.up()

    return _make_check(
        name, check_dapr_sidecar, groups=groups, critical=critical, timeout=timeout, ttl=ttl
    )


def dapr_pubsub(
    pubsub_name: str,
    *,
    topics: Sequence[str] = (),
    name: str | None = None,
    base_url: str | None = None,
    api_token: str | None = None,
    client: httpx.AsyncClient | None = None,
    groups: Sequence[str] = _READY,
    critical: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A check that the sidecar has loaded a pub/sub component and registered the app's topics.

    Reads `GET /v1.0/metadata`: `components[]` (`name`, `type` such as `pubsub.kafka`,
    `version`) and `subscriptions[]` (`pubsubname`, `topic`, `rules`, `deadLetterTopic`, ...).

    No such component, or one that is not a pub/sub, is DOWN: publishing fails outright. A topic
    in `topics` without a registered subscription is DEGRADED, not DOWN: publishing still works,
    and daprd reads the app's subscriptions only once the app is up, and drops them all while
    its app health check fails. With that health check pointed at the readiness route, a DOWN
    here would keep the subscriptions away for ever (no subscriptions, so not ready, so no
    subscriptions). DEGRADED keeps the pod serving and still shows on the health gauge (0.5).

    Args:
        pubsub_name: The component's name (`metadata.name` of the Component).
        topics: Topics the app subscribes to on that component.
        name: The check's name. Default: `dapr-pubsub-<pubsub_name>`.
        base_url: The sidecar's HTTP API (see `dapr_sidecar`).
        api_token: Sent as `dapr-api-token` (see `dapr_sidecar`).
        client: The client to use; by default a short-lived one per run. Yours stays open.
        groups: The probes it counts for.
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds before the engine counts a run as DOWN; also the request's timeout.
        ttl: Seconds a result is reused.

    Returns:
        The check. Details: `component` (its type), `version`, `subscribed` (the topics with
        a subscription on this component).
    """
    dapr = _Dapr(base_url, api_token, client, timeout)
    wanted = tuple(topics)

    async def check_dapr_pubsub() -> CheckResult:
        try:
            async with dapr.clients.session() as session:
                response = await dapr.get(session, "/v1.0/metadata")
        except httpx.HTTPError as exc:
            return dapr.unreachable(exc)
        if response.status_code != 200:
            return CheckResult.down(f"GET /v1.0/metadata answered {dapr.answer(response)}")
        try:
            metadata = response.json()
        except ValueError:
            return CheckResult.down("GET /v1.0/metadata answered a body that is not JSON")
        if not isinstance(metadata, dict):
            return CheckResult.down("GET /v1.0/metadata answered JSON that is not an object")
        # Dapr omits empty lists (`omitempty`): no components means no "components" key.
        components = [c for c in metadata.get("components") or () if isinstance(c, dict)]
        component = next((c for c in components if c.get("name") == pubsub_name), None)
        if component is None:
            loaded = ", ".join(sorted(str(c.get("name")) for c in components)) or "none"
            return CheckResult.down(
                f"Dapr has no component named {pubsub_name!r} (loaded: {loaded})"
            )
        kind = str(component.get("type") or "")
        if not kind.startswith("pubsub."):
            return CheckResult.down(
                f"Dapr component {pubsub_name!r} is a {kind or 'component of unknown type'}, "
                "not a pub/sub"
            )
        subscribed = sorted(
            {
                str(s.get("topic"))
                for s in metadata.get("subscriptions") or ()
                if isinstance(s, dict) and s.get("pubsubname") == pubsub_name
            }
        )
        details = {
            "component": kind,
            "version": str(component.get("version") or ""),
            "subscribed": subscribed,
        }
        missing = [topic for topic in wanted if topic not in subscribed]
        if missing:
            return CheckResult.degraded(
                f"no subscription registered on {pubsub_name!r} for topic(s) "
                f"{', '.join(missing)}: the app receives none of their messages",
                **details,
            )
        return CheckResult.up(**details)

    return _make_check(
        name or f"dapr-pubsub-{pubsub_name}",
        check_dapr_pubsub,
        groups=groups,
        critical=critical,
        timeout=timeout,
        ttl=ttl,
    )


def _is_job_error(code: str) -> bool:
    # SCHEDULER_GET_JOB, DAPR_SCHEDULER_GET_JOB, ERR_GET_JOB (the name changed across releases).
    return "JOB" in code.upper()


def dapr_jobs(
    *,
    name: str = "dapr-jobs",
    probe_job: str = _JOBS_PROBE_NAME,
    base_url: str | None = None,
    api_token: str | None = None,
    client: httpx.AsyncClient | None = None,
    groups: Sequence[str] = _READY,
    critical: bool = False,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A check that the Dapr Jobs API answers, which needs the Scheduler control-plane service.

    The Jobs API has no health endpoint, so the check GETs a job that does not exist, on the
    stable `/v1.0/jobs/{name}` (runtime 1.18+) and, when that route is missing (404 without a
    job error code), on the alpha `/v1.0-alpha1/jobs/{name}`. daprd answers a missing job with
    **500** `SCHEDULER_GET_JOB` "failed to get job due to: ... job not found" (the Jobs API
    reference: "500 ... Job doesn't exist or error in dapr code or Scheduler control plane
    service"), so the status alone says nothing: the message tells the two apart.

    - The job's data (200), or "not found" in the error: the scheduler answered, UP.
    - Any other error (the sidecar has no scheduler, cannot reach it, ...): DOWN, with
      daprd's message. A sidecar waiting for its scheduler can also hang until daprd's own
      30 s deadline; the engine's timeout makes that a DOWN.
    - No Jobs API route at all (404 on both): DOWN.

    Not critical by default: every replica shares the one Scheduler service, so a DOWN would
    take every pod out of its Service at once, also for the requests that never touch a job.

    Args:
        name: The check's name.
        probe_job: The job name asked for; it should not exist (if it does, that is UP too).
        base_url: The sidecar's HTTP API (see `dapr_sidecar`).
        api_token: Sent as `dapr-api-token` (see `dapr_sidecar`).
        client: The client to use; by default a short-lived one per run. Yours stays open.
        groups: The probes it counts for.
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds before the engine counts a run as DOWN; also each request's timeout.
        ttl: Seconds a result is reused.

    Returns:
        The check. Details: `api`, the API version that answered (`v1.0` or `v1.0-alpha1`).
    """
    dapr = _Dapr(base_url, api_token, client, timeout)

    async def check_dapr_jobs() -> CheckResult:
        try:
            async with dapr.clients.session() as session:
                for api in ("v1.0", "v1.0-alpha1"):
                    response = await dapr.get(session, f"/{api}/jobs/{probe_job}")
                    code, message = _dapr_error(response)
                    if response.status_code == 404 and not _is_job_error(code):
                        continue  # no such route on this runtime: try the older API
                    return _jobs_result(api, response, code, message, dapr)
        except httpx.HTTPError as exc:
            return dapr.unreachable(exc)
        return CheckResult.down(
            "this Dapr sidecar has no Jobs API: GET /v1.0/jobs and /v1.0-alpha1/jobs answered "
            "404 (the Jobs API needs Dapr 1.14 or later)"
        )

    return _make_check(
        name, check_dapr_jobs, groups=groups, critical=critical, timeout=timeout, ttl=ttl
    )


def _jobs_result(
    api: str, response: httpx.Response, code: str, message: str, dapr: _Dapr
) -> CheckResult:
    if response.is_success:
        return CheckResult.up(api=api)
    lowered = message.lower()
    if _is_job_error(code) and ("not found" in lowered or "notfound" in lowered):
        return CheckResult.up(api=api)
    if response.status_code == 500:
        return CheckResult.down(
            f"the Dapr sidecar answers but its Scheduler does not: GET /{api}/jobs answered "
            f"{dapr.answer(response)}",
            api=api,
        )
    return CheckResult.down(f"GET /{api}/jobs answered {dapr.answer(response)}", api=api)


# --- SMTP ----------------------------------------------------------------------------------------


def smtp(
    host: str,
    port: int,
    *,
    name: str = "smtp",
    starttls: bool = False,
    use_tls: bool = False,
    username: str | None = None,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    local_hostname: str | None = None,
    groups: Sequence[str] = _READY,
    critical: bool = False,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A check that an SMTP server greets, answers EHLO, and (when configured) STARTTLS and AUTH.

    Then it says QUIT. Every step gets what is left of `timeout` as its own timeout, so the whole
    conversation ends within the check's timeout, and a server that accepts the connection but
    never speaks is DOWN ("no greeting") rather than a socket left open. Whatever happens, the
    connection is closed before the run ends (also when the engine cancels it).

    Not critical by default: mail can usually wait, and serving the app's other requests while
    the mail server is away is better than answering all of them 503.

    Args:
        host: The server.
        port: Its port (25, 587 with `starttls`, 465 with `use_tls`).
        name: The check's name.
        starttls: Upgrade the connection with STARTTLS after EHLO (fails if not offered).
        use_tls: Connect over TLS from the start (implicit TLS, port 465).
        username: Log in with this user (with `password`).
        password: The password; never reported, scrubbed from the server's answers.
        tls_context: The TLS settings; default: system CAs, hostname verified.
        local_hostname: The name sent with EHLO. Default: this machine's host name
            (`socket.gethostname()`, read once), which spares a DNS lookup on every run.
        groups: The probes it counts for.
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds for the whole conversation, and before the engine counts it as DOWN.
        ttl: Seconds a result is reused.

    Returns:
        The check. Details: `greeting` (the first line of the server's greeting), `ehlo` (the
        first line of its EHLO answer), `tls` and `authenticated`.

    Raises:
        MissingExtraError: aiosmtplib is not installed.
        ConfigurationError: `starttls` and `use_tls` together, or only one of username/password.
    """
    try:
        import aiosmtplib
    except ImportError as exc:
        raise MissingExtraError("The SMTP health check", "smtp", "aiosmtplib") from exc
    if starttls and use_tls:
        raise ConfigurationError(
            f"health check {name!r}: starttls and use_tls exclude each other; use use_tls=True "
            "for implicit TLS (port 465) or starttls=True to upgrade a plain connection (587).",
            field="starttls",
            value=(starttls, use_tls),
        )
    if (username is None) != (password is None):
        raise ConfigurationError(
            f"health check {name!r}: give both username and password, or neither.",
            field="username",
            value=username,
        )
    helo_name = local_hostname or socket.gethostname()
    secrets = _credential_forms(username, password)
    tls_holder: list[ssl.SSLContext] = [tls_context] if tls_context is not None else []

    def tls() -> ssl.SSLContext | None:
        if not (starttls or use_tls):
            return None
        if not tls_holder:  # built on first use: loading the CA store takes a while
            tls_holder.append(ssl.create_default_context())
        return tls_holder[0]

    async def check_smtp() -> CheckResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def left() -> float:
            return max(deadline - loop.time(), 0.001)

        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=use_tls,
            start_tls=False,  # done below, explicitly, so a failure names its step
            tls_context=tls(),
            local_hostname=helo_name,
            timeout=timeout,
        )
        details: dict[str, Any] = {"tls": use_tls, "authenticated": False}
        transport: asyncio.BaseTransport | None = None
        step = "connect"
        try:
            greeting = await client.connect(timeout=left())
            details["greeting"] = _first_line(greeting.message)
            step = "EHLO"
            ehlo = await client.ehlo(timeout=left())
            details["ehlo"] = _first_line(ehlo.message)
            if starttls:
                step = "STARTTLS"
                await client.starttls(timeout=left())
                details["tls"] = True
                step = "EHLO after STARTTLS"
                await client.ehlo(timeout=left())
            if username is not None and password is not None:
                step = "AUTH"
                await client.login(username, password, timeout=left())
                details["authenticated"] = True
            step = "QUIT"
            transport = client.transport  # quit() closes it, gracefully: see below
            await client.quit(timeout=left())
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            return CheckResult.down(
                f"SMTP {host}:{port}: no connection or greeting within {timeout:g} s "
                f"({_describe(exc, secrets)})",
                **details,
            )
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return CheckResult.down(
                f"SMTP {host}:{port}: {step} failed: {_describe(exc, secrets)}", **details
            )
        finally:
            # Drop the connection now, whatever happened: the run failed, the engine cancelled
            # it, or QUIT closed it, but gracefully, which over TLS means a shutdown exchange
            # that can outlive the run by up to 30 s. abort() closes the socket outright.
            for open_transport in (client.transport, transport):
                if isinstance(open_transport, asyncio.WriteTransport):
                    open_transport.abort()
            client.close()
        return CheckResult.up(**details)

    return _make_check(name, check_smtp, groups=groups, critical=critical, timeout=timeout, ttl=ttl)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _credential_forms(username: str | None, password: str | None) -> tuple[str, ...]:
    """The password as sent: plain, and base64 on its own (AUTH LOGIN) or with the user (PLAIN)."""
    if not password:
        return ()

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return (password, b64(password), b64(f"\0{username or ''}\0{password}"))


# --- event-loop lag ------------------------------------------------------------------------------


def event_loop_lag(
    *,
    name: str = "event-loop",
    degraded_after: float = 0.1,
    down_after: float = 1.0,
    groups: Sequence[str] = ("live",),
    critical: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    ttl: float = _DEFAULT_TTL,
) -> Check:
    """A liveness check: how late the event loop runs a callback scheduled now.

    It schedules a callback with `loop.call_soon` and measures how long the loop takes to get to
    it, that is, how long the callbacks queued ahead of it hold the loop. One callback and two
    clock reads: cheap enough for a probe every few seconds. A loop blocked for longer than the
    check's timeout is DOWN by the engine's timeout.

    Args:
        name: The check's name.
        degraded_after: Seconds of lag from which the loop is DEGRADED.
        down_after: Seconds of lag from which it is DOWN.
        groups: The probes it counts for (`live` by default: it checks the process itself).
        critical: Whether its DOWN makes the group DOWN.
        timeout: Seconds before the engine counts a run as DOWN.
        ttl: Seconds a result is reused.

    Returns:
        The check (`dependency=False`). Details: `lag_ms`.

    Raises:
        ConfigurationError: Thresholds that are not `0 < degraded_after <= down_after`.
    """
    if not 0 < degraded_after <= down_after:
        raise ConfigurationError(
            f"health check {name!r}: thresholds must satisfy 0 < degraded_after <= down_after, "
            f"got degraded_after={degraded_after!r}, down_after={down_after!r}.",
            field="degraded_after",
            value=(degraded_after, down_after),
        )

    async def check_event_loop_lag() -> CheckResult:
        loop = asyncio.get_running_loop()
        ran = loop.create_future()
        scheduled_at = loop.time()
        loop.call_soon(_resolve_with_time, ran, loop)
        lag = await ran - scheduled_at
        lag_ms = round(lag * 1000, 3)
        if lag >= down_after:
            return CheckResult.down(
                f"event loop lag {lag_ms:g} ms, over {down_after * 1000:g} ms", lag_ms=lag_ms
            )
        if lag >= degraded_after:
            return CheckResult.degraded(
                f"event loop lag {lag_ms:g} ms, over {degraded_after * 1000:g} ms", lag_ms=lag_ms
            )
        return CheckResult.up(lag_ms=lag_ms)

    return _make_check(
        name,
        check_event_loop_lag,
        groups=groups,
        critical=critical,
        timeout=timeout,
        ttl=ttl,
        dependency=False,
    )


def _resolve_with_time(future: asyncio.Future[float], loop: asyncio.AbstractEventLoop) -> None:
    if not future.done():  # the run may have been cancelled meanwhile
        future.set_result(loop.time())
