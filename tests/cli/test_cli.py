from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from todo_observability.cli import main
from todo_observability.metrics import CATALOGUE


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


def test_config_shows_each_setting_and_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "backend")
    status, out = run("config")
    assert status == 0
    rows = {line.split()[0]: line.split(maxsplit=2) for line in out.splitlines()[1:]}
    assert rows["service_name"][1:] == ["backend", "$OTEL_SERVICE_NAME (beats configure())"]
    assert rows["metrics_path"][1:] == ["/metrics", "default"]


def test_config_says_how_each_variable_ranks_against_configure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TODO_OBS_ENVIRONMENT", "prod")
    monkeypatch.setenv("TODO_OBS_LOG_LEVEL", "debug")
    rows = {line.split()[0]: line.split(maxsplit=2) for line in run("config")[1].splitlines()[1:]}
    assert rows["environment"][1:] == ["prod", "$TODO_OBS_ENVIRONMENT (beats configure())"]
    assert rows["log_level"][1:] == ["DEBUG", "$TODO_OBS_LOG_LEVEL (yields to configure())"]
    assert rows["sample_ratio"][1:] == ["0.1", "default"]


def test_config_gives_no_rank_to_a_variable_configure_has_no_argument_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inspect

    from todo_observability import configure
    from todo_observability.config import ENVIRONMENT_ONLY, OPTIONS

    arguments = set(inspect.signature(configure).parameters)
    assert {o.field for o in OPTIONS} - arguments == ENVIRONMENT_ONLY
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    rows = {line.split()[0]: line.split(maxsplit=2) for line in run("config")[1].splitlines()[1:]}
    assert rows["sdk_disabled"][1:] == ["True", "$OTEL_SDK_DISABLED"]


def test_config_reports_an_invalid_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "often")
    assert run("config")[0] == 2
    assert (
        "OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, got 'often'"
        in capsys.readouterr().err
    )


def test_metrics_lists_the_catalogue() -> None:
    status, out = run("metrics", "--json")
    assert status == 0
    assert [row["name"] for row in json.loads(out)] == [spec.name for spec in CATALOGUE]
    assert "http_server_requests_total{method,route,status_code}" in run("metrics")[1]


def test_trace_renders_a_tree_from_a_span_file(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    root = {
        "traceId": "a" * 32,
        "id": "1" * 16,
        "name": "GET /x",
        "kind": "SERVER",
        "timestamp": 1,
        "duration": 2500,
        "localEndpoint": {"serviceName": "backend"},
    }
    child = {
        "traceId": "a" * 32,
        "id": "2" * 16,
        "parentId": "1" * 16,
        "name": "db",
        "timestamp": 2,
        "duration": 1000,
        "localEndpoint": {"serviceName": "backend"},
    }
    other = {**root, "traceId": "b" * 32}
    spans.write_text(
        json.dumps([child]) + "\n" + json.dumps([root]) + "\n\n" + json.dumps([other]) + "\n"
    )
    status, out = run("trace", str(spans), "--trace-id", "a" * 32)
    assert status == 0
    assert out.splitlines() == [
        f"trace {'a' * 32}: 2 spans",
        f"  {'backend':<12} {'SERVER':<8} {'GET /x':<44} {2.5:9.2f} ms",
        f"    {'backend':<12} {'INTERNAL':<8} {'db':<44} {1.0:9.2f} ms",
    ]
    assert run("trace", str(spans))[1].startswith(f"trace {'b' * 32}")
    assert run("trace", str(spans), "--all")[1].count("trace ") == 2


def test_trace_shows_the_latest_users_request_not_the_latest_background_span(
    tmp_path: Path,
) -> None:
    request = {
        "traceId": "a" * 32,
        "id": "1" * 16,
        "name": "POST /tasks",
        "kind": "SERVER",
        "timestamp": 10,
        "duration": 2000,
        "localEndpoint": {"serviceName": "backend"},
    }
    probe = {  # later, but a health check's own outgoing call
        "traceId": "c" * 32,
        "id": "3" * 16,
        "name": "GET",
        "kind": "CLIENT",
        "timestamp": 20,
        "duration": 100,
        "localEndpoint": {"serviceName": "backend"},
    }
    spans = tmp_path / "spans.jsonl"
    spans.write_text(json.dumps([request]) + "\n" + json.dumps([probe]) + "\n")
    status, out = run("trace", str(spans))
    assert status == 0
    assert out.startswith(f"trace {'a' * 32}: 1 spans")
    assert "--trace-id ID shows another" in out


def test_trace_rejects_a_file_that_is_not_spans(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl:1: not a JSON array of spans"):
        run("trace", str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert run("trace", str(empty)) == (1, f"{empty}: no spans\n")


def test_trace_says_when_the_file_or_the_trace_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(
        SystemExit, match=r"missing.jsonl: cannot read the span file \(No such file"
    ):
        run("trace", str(missing))
    with pytest.raises(SystemExit, match=r"cannot read the span file"):
        run("trace", str(tmp_path))  # a folder
    spans = tmp_path / "spans.jsonl"
    spans.write_text(json.dumps([{"traceId": "a" * 32, "id": "1" * 16, "name": "GET"}]) + "\n")
    status, out = run("trace", str(spans), "--trace-id", "b" * 32)
    assert status == 1
    assert f"no span of trace {'b' * 32}" in out
    assert run("trace", str(spans), "--trace-id", "A" * 32)[0] == 0


def test_config_names_resource_attributes_as_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=recurring")
    rows = {line.split()[0]: line.split(maxsplit=2) for line in run("config")[1].splitlines()[1:]}
    assert rows["service_name"][1:] == [
        "recurring",
        "$OTEL_RESOURCE_ATTRIBUTES (beats configure())",
    ]


def test_dlq_says_when_the_service_cannot_be_reached() -> None:
    from tests.helpers import free_port

    out = io.StringIO()
    service = f"http://127.0.0.1:{free_port()}"
    assert main(["dlq", "--service", service, "--timeout", "2", "list"], out=out) == 1
    assert f"cannot reach {service}" in out.getvalue()
    assert "--service" in out.getvalue()


def test_dlq_purge_needs_yes_before_anything_is_sent() -> None:
    out = io.StringIO()
    assert main(["dlq", "--service", "http://127.0.0.1:9", "purge", "pubsub/t/1"], out=out) == 1
    assert "repeat with --yes" in out.getvalue()
