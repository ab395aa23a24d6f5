"""Real dependencies for the health-check tests: PostgreSQL, SMTP servers, a port that never answers."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.helpers import SilentServer, free_port

MISSING_POSTGRESQL = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package "
    "'postgresql' (apt-get install postgresql; ./dev test installs it)."
)


# --- PostgreSQL ---------------------------------------------------------------------------------


def _postgresql_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    for candidate in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
        reverse=True,
    ):
        if (Path(candidate) / "pg_ctl").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free loopback port.

    initdb refuses to run as root: as root, the binaries run as the `postgres` system user
    (created by the Debian package) through `runuser`, and the folder belongs to that user.
    Connections from 127.0.0.1 are trusted (no password).
    """

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="todo-obs-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgresql.log"
        self.running = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root)
                raise RuntimeError(
                    "running as root, and there is no 'postgres' user to run initdb as: "
                    "install the Debian package 'postgresql'"
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver, sync or async) of the `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [*self._as, *args]
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{log}"
            )

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--options",
            options,
            "--wait",
            "--timeout",
            "30",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` ends the open sessions, `immediate` is a crash."""
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--mode",
            mode,
            "--wait",
            "stop",
        )
        self.running = False

    def remove(self) -> None:
        if self.running:
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started throwaway cluster, removed on exit; without the binaries: skip, or fail under CI."""
    bin_dir = _postgresql_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING_POSTGRESQL, pytrace=False)
        pytest.skip(MISSING_POSTGRESQL)
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def postgresql_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the session (initdb takes a while); removed at the end."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgresql(postgresql_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """The session's cluster, running at the start of the test and after it."""
    if not postgresql_cluster.running:
        postgresql_cluster.start()
    yield postgresql_cluster
    if not postgresql_cluster.running:
        postgresql_cluster.start()


# --- SMTP ---------------------------------------------------------------------------------------


class AcceptAll:
    """An aiosmtpd handler that takes every message and keeps nothing."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    controller: Controller
    user: str = ""
    password: str = ""
    client_tls: ssl.SSLContext | None = None
    logins: list[tuple[str, bool]] | None = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port: no TLS, no AUTH."""
    port = free_port()
    controller = Controller(
        AcceptAll(), hostname="127.0.0.1", port=port, server_hostname="mail.example.test"
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, controller)
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp_auth_server(certificate_authority: trustme.CA) -> Iterator[SmtpServer]:
    """A real SMTP server that requires STARTTLS, then AUTH, with one user.

    Its certificate, for 127.0.0.1, is signed by a throwaway CA that `client_tls` trusts.
    `logins` records each attempt: (user, accepted).
    """
    user, password = "mailer", "correct horse battery staple"
    logins: list[tuple[str, bool]] = []

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = data.login.decode() == user and data.password.decode() == password
        logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    certificate_authority.configure_trust(client_tls)

    port = free_port()
    controller = Controller(
        AcceptAll(),
        hostname="127.0.0.1",
        port=port,
        server_hostname="mail.example.test",
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, controller, user, password, client_tls, logins)
    finally:
        controller.stop()


@pytest.fixture
def silent_port() -> Iterator[SilentServer]:
    """A loopback port that accepts TCP connections and never answers."""
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
