"""What `pip install todo-observability` gets: the built distributions, their dependencies, the README.

The distributions are built from this checkout with `uv build` (the sdist first, then the wheel
from the sdist, as a downstream packager would), their file lists are compared with what was
decided, and the wheel is installed into a fresh virtual environment to run the README's
Quickstart under the `uvicorn` command, as a new user would.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "todo_observability"
HEX32 = re.compile(r"[0-9a-f]{32}")

# pytest needs tomli before Python 3.11, so one of the two is always there.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")


def _pyproject() -> dict[str, Any]:
    data: dict[str, Any] = _toml.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"cannot read a project name in {requirement!r}"
    return _normalise(match[0])


def _uv() -> str:
    """The uv of the tests group (installed beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    assert found, "uv is missing: install the tests dependency group (it lists uv)"
    return found


# --- direct imports are declared ---------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import statement of the package naming another distribution's module."""

    module: str  # as written after `import` or `from`
    where: str  # path:line
    guarded: bool  # in a function, a try that catches ImportError, or under TYPE_CHECKING


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.depth = 0  # functions, guarded try blocks and TYPE_CHECKING blocks around us
        self.found: list[tuple[list[str], int, bool]] = []

    def _guarded(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _guarded

    def visit_Try(self, node: ast.Try) -> None:
        caught = {
            name.id
            for handler in node.handlers
            if handler.type is not None
            for name in ast.walk(handler.type)
            if isinstance(name, ast.Name)
        }
        if caught & {"ImportError", "ModuleNotFoundError"}:
            self.depth += 1
            for statement in node.body:
                self.visit(statement)
            self.depth -= 1
            for rest in (*node.handlers, *node.orelse, *node.finalbody):
                self.visit(rest)
        else:
            self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}:
            self.depth += 1
            for statement in node.body:
                self.visit(statement)
            self.depth -= 1
            for statement in node.orelse:
                self.visit(statement)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(([alias.name], node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            # `from pkg import sub` may import the submodule pkg.sub (namespace packages do).
            candidates = [f"{node.module}.{alias.name}" for alias in node.names]
            self.found.append(([*candidates, node.module], node.lineno, self.depth > 0))


def _third_party_imports() -> list[tuple[list[str], Import]]:
    """Each import of another distribution: the module names it may load, and where it is."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(ROOT))
        visitor = _ImportVisitor()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=where))
        for candidates, line, guarded in visitor.found:
            top = candidates[-1].split(".")[0]
            if top in sys.stdlib_module_names or top in {"todo_observability", "__future__"}:
                continue
            found.append((candidates, Import(candidates[-1], f"{where}:{line}", guarded)))
    return found


def _module_index() -> dict[str, str]:
    """Every importable module of the installed distributions, and its distribution."""
    index: dict[str, str] = {}
    for distribution in metadata.distributions():
        name = _normalise(distribution.metadata["Name"])
        for file in distribution.files or ():
            parts = file.parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or ".." in parts:
                continue
            stem = parts[-1].split(".")[0]
            if parts[-1].endswith((".py", ".so", ".pyd")):
                dotted = [*parts[:-1]] if stem == "__init__" else [*parts[:-1], stem]
                if dotted:
                    index.setdefault(".".join(dotted), name)
    return index


def _distribution(candidates: list[str], index: dict[str, str]) -> str | None:
    for candidate in candidates:
        parts = candidate.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in index:
                return index[".".join(parts[:end])]
    return None


# Imports of undeclared distributions, each with why it needs no declaration.
UNDECLARED = {
    "pytest": "todo_observability.testing.pytest_plugin is loaded by pytest itself (entry point pytest11)",
}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = _pyproject()["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        extra: {_requirement_name(r) for r in requirements} - {"todo-observability"}
        for extra, requirements in project["optional-dependencies"].items()
    }
    return core, extras


def test_every_import_of_another_distribution_is_declared() -> None:
    index = _module_index()
    core, extras = _declared()
    in_extras = set().union(*extras.values())
    unresolved, undeclared, optional_in_core_only = [], [], []
    for candidates, found in _third_party_imports():
        distribution = _distribution(candidates, index)
        if distribution is None:
            unresolved.append(f"{found.where}: {found.module}")
        elif distribution in UNDECLARED:
            continue
        elif found.guarded and distribution not in core | in_extras:
            undeclared.append(f"{found.where}: {found.module} ({distribution}) is in no extra")
        elif not found.guarded and distribution not in core:
            optional_in_core_only.append(
                f"{found.where}: {found.module} ({distribution}) is imported unconditionally "
                "but is not in [project] dependencies"
            )
    assert unresolved == [], "imports no installed distribution provides (install the extras)"
    assert undeclared == []
    assert optional_in_core_only == []


def test_every_dependency_is_imported_directly() -> None:
    index = _module_index()
    imported = {_distribution(candidates, index) for candidates, _ in _third_party_imports()}
    core, _ = _declared()
    assert sorted(core - imported) == []


def test_the_import_scan_sees_guards_and_submodules() -> None:
    # The scan itself, on code shaped like the package's: were it blind to a guard or to
    # `from namespace import submodule`, the two tests above would pass for the wrong reason.
    source = (
        "from typing import TYPE_CHECKING\n"
        "import anyio\n"
        "from opentelemetry import trace\n"
        "if TYPE_CHECKING:\n    import uvicorn\n"
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
        "def f():\n    import sqlalchemy\n"
    )
    visitor = _ImportVisitor()
    visitor.visit(ast.parse(source))
    assert [(names[0], guarded) for names, _, guarded in visitor.found] == [
        ("typing.TYPE_CHECKING", False),
        ("anyio", False),
        ("opentelemetry.trace", False),
        ("uvicorn", True),
        ("orjson", True),
        ("sqlalchemy", True),
    ]
    index = _module_index()
    assert _distribution(["opentelemetry.trace", "opentelemetry"], index) == "opentelemetry-api"
    assert _distribution(["opentelemetry.sdk.trace"], index) == "opentelemetry-sdk"


def test_getting_started_explains_every_extra() -> None:
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    install = page.split("## Install\n", 1)[1].split("\n## ", 1)[0]
    explained = re.findall(r"^- `([a-z0-9-]+)`: ", install, re.M)
    assert explained == list(_pyproject()["project"]["optional-dependencies"])


def test_the_all_extra_installs_every_other_extra() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    [requirement] = extras["all"]
    match = re.fullmatch(r"todo-observability\[([a-z0-9,-]+)\]", requirement)
    assert match, requirement
    assert match[1].split(",") == [name for name in extras if name != "all"]


# --- the built distributions ------------------------------------------------------------------


@dataclass(frozen=True)
class Distributions:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> Distributions:
    """The sdist and wheel of this checkout; the wheel is built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--quiet", "--out-dir", str(out), str(ROOT)],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return Distributions(wheel, sdist)


def _package_files() -> set[str]:
    """The package's files as git tracks them (no caches, nothing untracked)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "todo_observability"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


@pytest.mark.slow
def test_the_wheel_holds_the_package_its_types_and_entry_points(
    distributions: Distributions,
) -> None:
    with zipfile.ZipFile(distributions.wheel) as wheel:
        names = set(wheel.namelist())
        [info] = {name.split("/")[0] for name in names if ".dist-info/" in name}
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        wheel_metadata = wheel.read(f"{info}/METADATA").decode()
    package = {name for name in names if not name.startswith(info)}
    assert package == _package_files()
    assert "todo_observability/py.typed" in package
    assert f"{info}/licenses/LICENSE" in names
    assert not {name for name in names if name.startswith(("tests/", "reference_app/"))}
    sections = dict(re.findall(r"^\[([^]]+)\]\n((?:.+\n?)*)", entry_points, re.M))
    assert sections["console_scripts"].split() == ["todo-obs", "=", "todo_observability.cli:main"]
    assert sections["pytest11"].split() == [
        "todo_observability",
        "=",
        "todo_observability.testing.pytest_plugin",
    ]
    assert sections["opentelemetry_propagator"].split() == [
        "todo_tracecontext",
        "=",
        "todo_observability.propagation:TraceContextPropagator",
    ]
    assert "License-Expression: Apache-2.0" in wheel_metadata.splitlines()
    declared = {f"Provides-Extra: {extra}" for extra in _declared()[1]}
    assert declared <= set(wheel_metadata.splitlines())


# hatchling always adds .gitignore (it tells later builds what to leave out).
SDIST_TOP_LEVEL = {
    ".gitignore",
    "CHANGELOG.md",
    "LICENSE",
    "PKG-INFO",
    "README.md",
    "pyproject.toml",
}
"""The sdist: the package and what building and reading it needs; no tests, docs or reference app
(they need the whole repository: its noxfile, mkdocs.yml and reference_app/)."""


@pytest.mark.slow
def test_the_sdist_holds_exactly_the_package_and_its_documents(
    distributions: Distributions,
) -> None:
    with tarfile.open(distributions.sdist) as sdist:
        names = {member.name for member in sdist.getmembers() if member.isfile()}
    [prefix] = {name.split("/")[0] for name in names}
    relative = {name.removeprefix(f"{prefix}/") for name in names}
    assert {name for name in relative if "/" not in name} == SDIST_TOP_LEVEL
    assert {name for name in relative if "/" in name} == _package_files()


# --- the README's Quickstart, from a fresh install ----------------------------------------------


def _quickstart() -> tuple[str, str, str]:
    """The README Quickstart's install line, program and run command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    [install] = re.findall(r"^pip install .*$", section, re.M)
    program = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    [command] = re.findall(r"Run it with `([^`]+)`", section)
    return install, program, command


@pytest.fixture
def fresh_venv(tmp_path: Path, distributions: Distributions) -> Path:
    """A new virtual environment where the README's install line ran, against the built wheel."""
    install, _, _ = _quickstart()
    words = shlex.split(install)
    assert words[:2] == ["pip", "install"], install
    # Our package comes from the wheel just built; every other requirement from the index.
    ours = [i for i, word in enumerate(words) if re.match(r"todo-observability(\[|$)", word)]
    assert len(ours) == 1, f"the install line names todo-observability once: {install}"
    words[ours[0]] = words[ours[0]].replace("todo-observability", str(distributions.wheel), 1)
    venv = tmp_path / "venv"
    uv = _uv()
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, *words, "--quiet", "--python", str(venv / "bin" / "python")],
        check=True,
        timeout=180,
    )
    return venv


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written_from_a_fresh_install(
    tmp_path: Path, fresh_venv: Path
) -> None:
    _, program, command = _quickstart()
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text(program, encoding="utf-8")
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "TODO_OBS_", "PYTHON", "VIRTUAL_ENV", "UVICORN_"))
    }
    env |= {
        "PATH": f"{fresh_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "UVICORN_PORT": str(port),  # the command as written, on a free port
        # The deployment renames the service its code names "backend".
        "OTEL_SERVICE_NAME": "backend-canary",
        # No span leaves for a Zipkin that may belong to someone else on this machine.
        "OTEL_TRACES_EXPORTER": "none",
    }
    located = subprocess.run(
        ["python", "-c", "import todo_observability; print(todo_observability.__file__)"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert Path(located.strip()).is_relative_to(fresh_venv)  # the wheel, not this checkout

    argv = shlex.split(command)
    assert argv[0] == "uvicorn"
    argv[0] = str(fresh_venv / "bin" / "uvicorn")
    assert Path(argv[0]).is_file(), "the README's install line does not install uvicorn"
    process = subprocess.Popen(
        argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # If the server never says it listens, stop waiting for it after a while.
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    lines: list[dict[str, Any]] = []
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.append(json.loads(raw))
            if "Uvicorn running on" in lines[-1]["message"]:
                break
        else:
            pytest.fail(f"uvicorn stopped before serving: {lines}")
        response = httpx.get(
            f"http://127.0.0.1:{port}/tasks/42", headers={"Authorization": "Bearer alice"}
        )
        assert response.status_code == 200
        assert response.json() == {"id": 42}
    finally:
        watchdog.cancel()
        process.terminate()
        out, err = process.communicate(timeout=15)
    lines += [json.loads(raw) for raw in out.splitlines()]  # every line is JSON
    assert err == ""

    [read] = [line for line in lines if line["message"] == "task read"]
    [access] = [line for line in lines if line["logger"] == "todo_observability.access"]
    for line in (read, access):
        assert line["user_id"] == "alice"
        assert line["service_name"] == "backend-canary"
        assert HEX32.fullmatch(line["request_id"])
        assert HEX32.fullmatch(line["trace_id"])
    assert read["request_id"] == access["request_id"] == response.headers["X-Request-ID"]
    assert read["trace_id"] == access["trace_id"]
    assert read["context"] == {"task_id": 42}


def test_the_readme_quickstart_is_the_example_file() -> None:
    _, program, _ = _quickstart()
    assert program == (ROOT / "examples/app.py").read_text(encoding="utf-8")
