"""Development sessions: tests on every supported Python, lint, typecheck, docs, benchmarks.

Run `nox` for the default set (what CI runs), or `nox -s tests-3.12` for one.
Environments are built with uv from the dependency groups in pyproject.toml.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "ops", "image", "lint", "typecheck", "docs"]
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
    # Python-version dependent, and grafana-foundation-sdk needs 3.11. The image has its own
    # too (`nox -s image`).
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        "--ignore=tests/reference_app/ops",
        "--ignore=tests/reference_app/image",
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


IMAGE_TOOLS = {"podman": "podman", "buildah": "buildah", "debootstrap": "debootstrap"}
IMAGE_BASE = "localhost/todo-reference-app-base:bookworm"


def _apt_mirror(codename: str) -> str:
    """The Debian mirror apt uses for `codename` (deb822 sources first, then sources.list)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in pathlib.Path(path).read_text(encoding="utf-8").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
            )
            suites = fields.get("Suites", "").split()
            if codename in suites and "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0]
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if not os.path.exists(path):
            continue
        for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["deb"]:
                words = [w for w in words[1:] if not w.startswith("[")]
                if len(words) >= 3 and words[1] == codename and "main" in words[2:]:
                    return words[0]
    return "http://deb.debian.org/debian"


def _image_base(session: nox.Session) -> str:
    """A Debian base image with python3 and venv, made with debootstrap and cached.

    No container registry may be reachable: the base is bootstrapped from the Debian mirror
    apt already uses, imported into podman's storage (kept across runs) and saved as a tarball
    under the session's folder, which a later run imports again if the storage was reset.
    """
    exists = subprocess.run(["podman", "image", "exists", IMAGE_BASE], check=False)
    if exists.returncode == 0:
        session.log(f"base image {IMAGE_BASE} is there already")
        return IMAGE_BASE
    release = pathlib.Path("/etc/os-release").read_text(encoding="utf-8").splitlines()
    info = dict(line.split("=", 1) for line in release if "=" in line)
    codename = info.get("VERSION_CODENAME", "bookworm").strip('"')
    cache = os.path.normpath(
        os.path.join(str(session.virtualenv.location), "..", f"image-base-{codename}.tar")
    )
    if not os.path.exists(cache):
        root = os.path.join(str(session.create_tmp()), "rootfs")
        shutil.rmtree(root, ignore_errors=True)
        mirror = _apt_mirror(codename)
        session.log(f"bootstrapping a Debian {codename} base from {mirror}")
        session.run(
            "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            codename, root, mirror, external=True, silent=True,
        )  # fmt: skip
        session.run("tar", "-C", root, "-cf", cache + ".part", ".", external=True)
        os.replace(cache + ".part", cache)
        shutil.rmtree(root, ignore_errors=True)
    session.run("podman", "import", "--quiet", cache, IMAGE_BASE, external=True, silent=True)
    return IMAGE_BASE


@nox.session(python="3.12")
def image(session: nox.Session) -> None:
    """Build the reference system's image (Containerfile) with podman, and run each service from it.

    The base is bootstrapped with debootstrap (no registry needed) unless TODO_IMAGE_BASE names
    one; the services run with `buildah run` on the host's network, next to a sidecar emulator.
    """
    missing = [
        f"{tool} (Debian package {package!r})"
        for tool, package in IMAGE_TOOLS.items()
        if not shutil.which(tool)
    ]
    if missing:
        session.error(
            f"missing tools: {', '.join(missing)}; install them with apt-get (./dev does)."
        )
    _install(session, "reference", extras="fastapi")
    session.install("pytest>=8.3", "pyyaml>=6", "anyio>=4.4")
    base = os.environ.get("TODO_IMAGE_BASE") or _image_base(session)
    session.run(
        "pytest", "tests/reference_app/image", *session.posargs, env={"TODO_IMAGE_BASE": base}
    )


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
