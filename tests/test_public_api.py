from __future__ import annotations

import json
import subprocess
import sys

import pytest

import todo_observability


def test_public_names_are_a_decision() -> None:
    assert todo_observability.__all__ == [
        "ConfigurationError",
        "Observability",
        "ObservabilityError",
        "ObservabilityMiddleware",
        "__version__",
        "bind_context",
        "configure",
        "create_http_client",
        "get_logger",
        "get_request_id",
        "get_user_id",
        "instrument_asyncpg",
        "instrument_httpx",
        "instrument_redis",
        "instrument_sqlalchemy",
        "measured",
        "set_user_id",
        "traced",
    ]
    assert todo_observability.__all__ == sorted(todo_observability.__all__)
    for name in todo_observability.__all__:
        assert getattr(todo_observability, name) is not None


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        getattr(todo_observability, "nothing_here")  # noqa: B009 - the dynamic lookup is the point


def test_import_is_cheap_and_has_no_side_effects() -> None:
    code = (
        "import json, logging, sys; import todo_observability; "
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'dapr', 'opentelemetry', 'prometheus_client', 'httpx', 'starlette')), "
        "'root_handlers': len(logging.getLogger().handlers)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report == {"modules": [], "root_handlers": 0}


def test_package_ships_type_information() -> None:
    from importlib.resources import files

    assert files("todo_observability").joinpath("py.typed").is_file()


PUBLIC_PACKAGES = {
    "todo_observability.cli": ["main"],
    "todo_observability.dapr": [
        "Claim",
        "DaprClient",
        "DaprError",
        "DaprStateDeadLetterStore",
        "DaprStateIdempotencyStore",
        "DeadLetterStore",
        "DeadLetters",
        "Drop",
        "IdempotencyStore",
        "InMemoryDeadLetterStore",
        "InMemoryIdempotencyStore",
        "Job",
        "MalformedEvent",
        "Message",
        "Outcome",
        "ParkedMessage",
        "Retry",
        "SqlDeadLetterStore",
        "Subscriptions",
        "sidecar_endpoint",
    ],
    "todo_observability.health": [
        "GROUPS",
        "Check",
        "CheckFunction",
        "CheckResult",
        "GroupReport",
        "HealthEngine",
        "Status",
    ],
    "todo_observability.ops": [],
    "todo_observability.plugins": ["ENTRY_POINT_GROUP", "PluginHost", "hookimpl", "hookspec"],
    "todo_observability.testing": ["LogCapture", "SpanCapture", "metric_value"],
}


@pytest.mark.parametrize("package", sorted(PUBLIC_PACKAGES))
def test_each_public_package_names_its_public_api(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    assert module.__all__ == PUBLIC_PACKAGES[package]
    for name in module.__all__:
        assert getattr(module, name) is not None


def _public_modules() -> list[str]:
    import pkgutil

    names = []
    for info in pkgutil.walk_packages(todo_observability.__path__, "todo_observability."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        if info.name.startswith(("todo_observability.cli.", "todo_observability.testing.sidecar.")):
            continue  # the command's and the emulator's insides; their packages are documented
        names.append(info.name)
    return names


def test_every_public_module_says_what_it_exports() -> None:
    import importlib

    missing = [
        name for name in _public_modules() if not hasattr(importlib.import_module(name), "__all__")
    ]
    assert missing == []


def test_the_docs_document_the_public_modules_and_only_them() -> None:
    from pathlib import Path

    docs = Path(__file__).parents[1] / "docs"
    documented = {
        line.removeprefix("::: ").strip()
        for page in docs.rglob("*.md")
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("::: ")
    }
    private = sorted(
        name for name in documented if any(p.startswith("_") for p in name.split(".")[1:])
    )
    assert private == []
    assert sorted(set(_public_modules()) - documented) == []


def test_a_running_service_imports_no_tooling() -> None:
    code = (
        "import json, sys; import todo_observability as obs; "
        "from fastapi import FastAPI; from todo_observability.dapr import Subscriptions; "
        "from todo_observability.health import checks; "
        "app = FastAPI(); o = obs.configure(app, service_name='svc', traces_exporter='none', "
        "load_plugins=False); Subscriptions().install(app); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith("
        "('todo_observability.ops', 'todo_observability.cli', 'todo_observability.testing')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_readme_lists_every_extra() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    declared = re.findall(r"^([a-z0-9-]+) = ", section, flags=re.MULTILINE)
    readme = (root / "README.md").read_text(encoding="utf-8")
    [listed] = re.findall(r"\(extras: ([^)]*)\)", readme)
    assert [name.strip(" `") for name in listed.split(",")] == declared
