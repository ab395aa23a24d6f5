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
