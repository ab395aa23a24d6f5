"""Development sessions: tests on every supported Python, lint, typecheck, docs, benchmarks.

Run `nox` for the default set (what CI runs), or `nox -s tests-3.12` for one.
Environments are built with uv from the dependency groups in pyproject.toml.
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "ops", "lint", "typecheck", "docs"]
nox.options.error_on_missing_interpreters = os.environ.get("CI") == "true"


def _install(session: nox.Session, *groups: str, extras: str = "") -> None:
    """Install the project (editable) with dependency groups, through uv."""
    args = ["uv", "pip", "install", "--python", str(session.virtualenv.location)]
    args += ["-e", f".[{extras}]" if extras else "."]
    for group in groups:
        args += ["--group", group]
    session.run_install(*args, external=True, silent=True)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite under branch coverage on one Python version."""
    _install(session, "tests", extras="fastapi,otlp,dapr")
    if os.environ.get("CI") == "true":
        if shutil.which("promtool") is None:
            session.error(
                "promtool is missing: install the Debian package 'prometheus' (./dev does)."
            )
        if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
            session.error(
                "initdb is missing: install the Debian package 'postgresql' (./dev does)."
            )
    # `coverage run` rather than pytest-cov: our pytest plugin is imported through its entry
    # point before pytest-cov could start measuring, and its import-time lines would be lost.
    env = {"COVERAGE_FILE": f".coverage.{session.python}"}
    session.run("coverage", "erase", env=env)
    # The operations pack has its own session (`nox -s ops`): its tools and generators are not
    # Python-version dependent, and grafana-foundation-sdk needs 3.11.
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        "--ignore=tests/reference_app/ops",
        *session.posargs,
        env=env,
    )
    session.run("coverage", "combine", "--quiet", env=env, success_codes=[0, 1])
    session.run("coverage", "report", env=env)
    session.run("coverage", "xml", "-o", f"coverage-{session.python}.xml", "--quiet", env=env)


OPS_TOOLS = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "kubectl": "kubectl (kustomize is built in)",
}


@nox.session(python="3.12")
def ops(session: nox.Session) -> None:
    """Check the operations pack with the real tools: promtool, amtool, Alertmanager, Prometheus, kubectl.

    The pack does not depend on the Python version, so it runs once, not on every interpreter.
    """
    _install(session, "ops", extras="fastapi,otlp,dapr")
    if os.environ.get("CI") == "true":
        missing = [
            f"{tool} ({package})" for tool, package in OPS_TOOLS.items() if not shutil.which(tool)
        ]
        if missing:
            session.error(f"missing tools: {', '.join(missing)}; ./dev installs the Debian ones.")
    session.run("pytest", "tests/reference_app/ops", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """Lint with ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", *session.posargs, ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.12")
def typecheck(session: nox.Session) -> None:
    """Type-check with mypy --strict: package, tests, examples, reference app, benchmarks, this file."""
    _install(session, "typing", "benchmarks", extras="fastapi,dapr")
    session.run("mypy", *session.posargs)


@nox.session(python="3.12")
def docs(session: nox.Session) -> None:
    """Build the mkdocs site with --strict (a broken link or reference fails)."""
    _install(session, "docs", extras="fastapi,dapr")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session(python="3.12", default=False)
def benchmarks(session: nox.Session) -> None:
    """Side-by-side benchmarks against the peer libraries (not run by default)."""
    _install(session, "benchmarks", extras="fastapi")
    session.run("python", "-m", "benchmarks.run", *session.posargs)
