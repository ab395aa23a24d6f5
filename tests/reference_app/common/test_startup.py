"""serve(): the start-up every service's `__main__` shares, and how it refuses a bad setting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from reference_app.common.startup import BAD_SETTING_EXIT_STATUS, serve
from todo_observability import ConfigurationError


@dataclass(frozen=True)
class Listening:
    host: str = "0.0.0.0"
    port: int = 8123


def refuse(variable: str) -> ConfigurationError:
    return ConfigurationError(
        f"{variable} is wrong; fix it", field=variable.lower(), env_var=variable
    )


def test_a_refused_setting_prints_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    def read() -> Listening:
        raise refuse("PORT")

    with pytest.raises(SystemExit) as exited:
        serve("backend", read, lambda settings: FastAPI())

    assert exited.value.code == BAD_SETTING_EXIT_STATUS == 2
    assert capsys.readouterr().err == "backend: PORT is wrong; fix it\n"


def test_a_setting_the_app_refuses_exits_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    def build(settings: Listening) -> FastAPI:
        raise refuse("OTEL_TRACES_SAMPLER_ARG")

    with pytest.raises(SystemExit) as exited:
        serve("frontend", Listening, build)

    assert exited.value.code == 2
    assert capsys.readouterr().err == "frontend: OTEL_TRACES_SAMPLER_ARG is wrong; fix it\n"


def test_good_settings_serve_the_app_on_their_host_and_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = FastAPI()
    served: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append((app, options)))

    serve("recurring-task-service", Listening, lambda settings: app)

    assert served == [(app, {"host": "0.0.0.0", "port": 8123, "log_config": None})]
